"""Writes for users, teams, invites and API tokens: the one place each is created or changed.

Each write that changes what a team may do is recorded in the team's audit log here,
so a second caller (page, API, command) cannot forget it.
"""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model, password_validation
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import IntegrityError, transaction
from django.http import Http404
from django.utils import timezone

from webapp.accounts.models import ApiToken, Invite, Membership, Role, Team
from webapp.accounts.permissions import require_role
from webapp.audit.models import Action
from webapp.audit.services import record_action
from webapp.input_errors import InputError

TOKEN_PREFIX = "rw_"
INVITE_PREFIX = "inv_"
INVITE_DAYS = 7
MAX_INVITE_DAYS = 90
MAX_TOKEN_DAYS = 3650
TEAM_NAME_MAX = 100
LAST_ADMIN = "a team must keep at least one admin: make another member admin first"


def _clean_name(value: str, field: str, limit: int) -> str:
    name = (value or "").strip()
    if not name:
        raise InputError({field: "must not be empty"})
    if len(name) > limit:
        raise InputError({field: f"must be at most {limit} characters"})
    if any(ord(c) < 32 for c in name):
        raise InputError({field: "must not contain control characters"})
    return name


def _role(value: str) -> str:
    if value not in Role.values:
        raise InputError({"role": f"must be one of {', '.join(Role.values)}"})
    return value


# --- teams ----------------------------------------------------------------------


@transaction.atomic
def create_team(*, user: AbstractBaseUser, name: str) -> Team:
    """A new team with ``user`` as its first admin."""
    name = _clean_name(name, "name", TEAM_NAME_MAX)
    if Team.objects.filter(name__iexact=name).exists():
        raise InputError({"name": f"a team named {name!r} already exists; choose another name"})
    try:
        with transaction.atomic():
            team = Team.objects.create(name=name)
    except IntegrityError:  # a concurrent create of the same name
        raise InputError({"name": f"a team named {name!r} already exists; choose another name"}) from None
    Membership.objects.create(team=team, user=user, role=Role.ADMIN)
    record_action(team=team, actor=user, action=Action.TEAM_CREATED, target=team)
    return team


@transaction.atomic
def rename_team(*, actor: AbstractBaseUser, team: Team, name: str) -> Team:
    """An admin gives the team another name (unique, case-insensitively, like at creation)."""
    require_role(actor, team.id, Role.ADMIN)
    name = _clean_name(name, "name", TEAM_NAME_MAX)
    old = team.name
    if name == old:
        return team
    if Team.objects.filter(name__iexact=name).exclude(pk=team.pk).exists():
        raise InputError({"name": f"a team named {name!r} already exists; choose another name"})
    try:
        with transaction.atomic():
            Team.objects.filter(pk=team.pk).update(name=name)
    except IntegrityError:  # a concurrent create or rename to the same name
        raise InputError({"name": f"a team named {name!r} already exists; choose another name"}) from None
    team.name = name
    record_action(
        team=team, actor=actor, action=Action.TEAM_RENAMED, target=team, details={"from": old, "to": name}
    )
    return team


def team_projects_blocking_delete(team: Team) -> list[str]:
    """Names of the projects that keep ``team`` from being deleted (all of them)."""
    return list(team.projects.order_by("name").values_list("name", flat=True))


@transaction.atomic
def delete_team(*, actor: AbstractBaseUser, team: Team) -> None:
    """An admin deletes a team that has no projects (its members and invites go with it).

    A team with projects is refused with their names: delete or move them first, so that
    no run, checkpoint or report is lost by a click on the team. The team row is locked,
    so a project created at the same moment either lands first (and refuses the delete)
    or finds no team. The audit entries stay, without their team, for the operator.
    """
    require_role(actor, team.id, Role.ADMIN)
    locked = Team.objects.select_for_update().filter(pk=team.pk).first()
    if locked is None:
        return  # deleted meanwhile
    names = team_projects_blocking_delete(locked)
    if names:
        listed = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
        raise InputError(
            {
                "team": f"the team still has projects ({listed}); delete them or move them to another team first"
            }
        )
    record_action(
        team=locked,
        actor=actor,
        action=Action.TEAM_DELETED,
        target=locked,
        details={"name": locked.name, "members": locked.memberships.count()},
    )
    locked.delete()


@transaction.atomic
def ensure_personal_team(user: AbstractBaseUser) -> Team:
    """A team the user administers: their oldest, or a new one named after them."""
    membership = (
        Membership.objects.filter(user=user, role=Role.ADMIN)
        .select_related("team")
        .order_by("team_id")
        .first()
    )
    if membership:
        return membership.team
    base = user.get_username()
    name, n = base, 1
    while Team.objects.filter(name=name).exists():
        n += 1
        name = f"{base}-{n}"
    team = Team.objects.create(name=name)
    Membership.objects.create(team=team, user=user, role=Role.ADMIN)
    return team


@transaction.atomic
def add_member(team: Team, user: AbstractBaseUser, role: str = Role.MEMBER) -> Membership:
    """The operator's way in (shell, tests): no actor, so no audit entry; people use ``accept_invite``."""
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    return membership


def _admins_left(team: Team, without_user_id: int) -> bool:
    return Membership.objects.filter(team=team, role=Role.ADMIN).exclude(user_id=without_user_id).exists()


def _membership(team: Team, user_id: int) -> Membership:
    """The membership to change, with the team row locked first.

    One lock per team serialises its role changes and removals (PostgreSQL): two admins
    demoting each other at once cannot both pass the last-admin check, and no deadlock
    comes of locking two memberships in opposite orders.
    """
    Team.objects.select_for_update().filter(pk=team.pk).first()
    membership = Membership.objects.filter(team=team, user_id=user_id).select_related("user").first()
    if membership is None:
        raise InputError({"user": "is not a member of this team"})
    return membership


@transaction.atomic
def change_role(*, actor: AbstractBaseUser, team: Team, user_id: int, role: str) -> Membership:
    """An admin gives a member another role; the last admin cannot be demoted."""
    require_role(actor, team.id, Role.ADMIN)
    role = _role(role)
    membership = _membership(team, user_id)
    old = membership.role
    if old == role:
        return membership
    if old == Role.ADMIN and not _admins_left(team, user_id):
        raise InputError({"role": LAST_ADMIN})
    membership.role = role
    membership.save(update_fields=["role"])
    record_action(
        team=team,
        actor=actor,
        action=Action.MEMBER_ROLE_CHANGED,
        target=membership.user,
        details={"from": old, "to": role},
    )
    return membership


@transaction.atomic
def remove_member(*, actor: AbstractBaseUser, team: Team, user_id: int) -> None:
    """An admin removes a member, or a member leaves; the last admin can do neither."""
    leaving = actor.pk == user_id
    if not leaving:
        require_role(actor, team.id, Role.ADMIN)
    membership = _membership(team, user_id)
    if membership.role == Role.ADMIN and not _admins_left(team, user_id):
        who = "you are the last admin and cannot leave" if leaving else "this is the last admin"
        raise InputError({"user": f"{who}; {LAST_ADMIN}"})
    person = membership.user
    membership.delete()
    record_action(
        team=team,
        actor=actor,
        action=Action.MEMBER_REMOVED,
        target=person,
        details={"role": membership.role, "left": leaving},
    )


# --- invites --------------------------------------------------------------------


@transaction.atomic
def create_invite(
    *, actor: AbstractBaseUser, team: Team, role: str = Role.MEMBER, days: int = INVITE_DAYS
) -> tuple[Invite, str]:
    """A single-use invite and its secret (shown once; only the hash is stored)."""
    require_role(actor, team.id, Role.ADMIN)
    role = _role(role)
    if not 1 <= days <= MAX_INVITE_DAYS:
        raise InputError({"expires_in_days": f"must be between 1 and {MAX_INVITE_DAYS}"})
    secret = INVITE_PREFIX + secrets.token_urlsafe(24)
    invite = Invite.objects.create(
        team=team,
        role=role,
        token_hash=ApiToken.hash(secret),
        created_by=actor,
        expires_at=timezone.now() + timedelta(days=days),
    )
    record_action(
        team=team,
        actor=actor,
        action=Action.MEMBER_INVITED,
        target=invite,
        details={"role": role, "expires_at": invite.expires_at.isoformat()},
    )
    return invite, secret


@transaction.atomic
def revoke_invite(*, actor: AbstractBaseUser, invite: Invite) -> None:
    require_role(actor, invite.team_id, Role.ADMIN)
    updated = Invite.objects.filter(pk=invite.pk, accepted_at=None, revoked_at=None).update(
        revoked_at=timezone.now()
    )
    if not updated:
        raise InputError({"invite": "was already used or revoked"})
    record_action(team=invite.team_id, actor=actor, action=Action.INVITE_REVOKED, target=invite)


def invite_for_secret(secret: str) -> Invite | None:
    """The invite a link's secret names, whatever its state, or None."""
    if not secret or not secret.startswith(INVITE_PREFIX) or len(secret) > 100:
        return None
    return Invite.objects.select_related("team").filter(token_hash=ApiToken.hash(secret)).first()


def invite_problem(invite: Invite | None) -> str | None:
    """Why a link cannot be used now, for a person to read; None when it can."""
    if invite is None:
        return "this invite link is not valid; ask a team admin for a new one"
    if invite.revoked_at is not None:
        return "this invite was revoked; ask a team admin for a new one"
    if invite.accepted_at is not None:
        return "this invite was already used; ask a team admin for a new one"
    if invite.expires_at <= timezone.now():
        return "this invite has expired; ask a team admin for a new one"
    return None


@transaction.atomic
def accept_invite(*, user: AbstractBaseUser, secret: str) -> Membership:
    """Join the invite's team with its role; the invite is used up."""
    invite = invite_for_secret(secret)
    problem = invite_problem(invite)
    if problem:
        raise InputError({"token": problem})
    if Membership.objects.filter(team=invite.team, user=user).exists():
        raise InputError({"token": f"you are already a member of {invite.team.name}"})
    # The conditional UPDATE is the single use: of two people racing one link, one wins.
    claimed = Invite.objects.filter(
        pk=invite.pk, accepted_at=None, revoked_at=None, expires_at__gt=timezone.now()
    ).update(accepted_at=timezone.now(), accepted_by=user)
    if not claimed:
        raise InputError({"token": "this invite was already used; ask a team admin for a new one"})
    membership = Membership.objects.create(team=invite.team, user=user, role=invite.role)
    record_action(
        team=invite.team,
        actor=user,
        action=Action.MEMBER_JOINED,
        target=user,
        details={"role": invite.role, "invite": invite.pk},
    )
    return membership


# --- people ---------------------------------------------------------------------


@transaction.atomic
def sign_up(*, username: str, password: str, invite_secret: str = "") -> AbstractBaseUser:
    """A new account, joined to the invite's team; without an invite only when sign-up is open."""
    if invite_secret:
        problem = invite_problem(invite_for_secret(invite_secret))
        if problem:
            raise InputError({"token": problem})
    elif not settings.OPEN_SIGNUP:
        raise PermissionDenied("Accounts are created through an invite link from a team admin.")
    User = get_user_model()
    username = (username or "").strip()
    errors: dict[str, str] = {}
    field = User._meta.get_field(User.USERNAME_FIELD)
    try:
        field.run_validators(username)
        if not username:
            raise ValidationError("must not be empty")
        if len(username) > field.max_length:
            raise ValidationError(f"must be at most {field.max_length} characters")
    except ValidationError as exc:
        errors["username"] = " ".join(exc.messages)
    if not errors and User.objects.filter(**{f"{User.USERNAME_FIELD}__iexact": username}).exists():
        errors["username"] = "is taken; choose another"
    candidate = User(**{User.USERNAME_FIELD: username})
    try:
        password_validation.validate_password(password or "", candidate)
    except ValidationError as exc:
        errors["password"] = " ".join(exc.messages)
    if errors:
        raise InputError(errors)
    try:
        with transaction.atomic():
            user = User.objects.create_user(**{User.USERNAME_FIELD: username}, password=password)
    except IntegrityError:  # the same name signed up at the same moment
        raise InputError({"username": "is taken; choose another"}) from None
    if invite_secret:
        accept_invite(user=user, secret=invite_secret)
    return user


# --- API tokens -----------------------------------------------------------------


@transaction.atomic
def issue_api_token(
    user: AbstractBaseUser, name: str = "", *, expires_in_days: int | None = None, read_only: bool = False
) -> tuple[ApiToken, str]:
    """Create a token for ``user``: the row and its secret (shown once; only the hash is stored)."""
    name = (name or "").strip()
    if len(name) > 100:
        raise InputError({"name": "must be at most 100 characters"})
    if expires_in_days is not None and not 1 <= expires_in_days <= MAX_TOKEN_DAYS:
        raise InputError({"expires_in_days": f"must be between 1 and {MAX_TOKEN_DAYS}, or left out"})
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token = ApiToken.objects.create(
        user=user,
        name=name,
        token_hash=ApiToken.hash(secret),
        prefix=secret[:10],
        expires_at=timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None,
        read_only=read_only,
    )
    # A token acts in every team of its user: each team's log shows it.
    for team_id in Membership.objects.filter(user=user).values_list("team_id", flat=True):
        record_action(
            team=team_id,
            actor=user,
            action=Action.TOKEN_CREATED,
            target=token,
            details={"prefix": token.prefix, "read_only": read_only, "expires_in_days": expires_in_days},
        )
    return token, secret


def create_api_token(
    user: AbstractBaseUser, name: str = "", *, expires_in_days: int | None = None, read_only: bool = False
) -> str:
    """Create a token for ``user`` and return its secret (``create_token``, tests, benchmarks)."""
    return issue_api_token(user, name, expires_in_days=expires_in_days, read_only=read_only)[1]


@transaction.atomic
def revoke_api_token(*, user: AbstractBaseUser, token_id: int) -> ApiToken:
    """Revoke one of ``user``'s own tokens; it answers 401 from now on."""
    token = ApiToken.objects.filter(pk=token_id, user=user).first()
    if token is None:
        raise Http404("No such token.")
    if token.revoked_at is None:
        token.revoked_at = timezone.now()
        token.save(update_fields=["revoked_at"])
        for team_id in Membership.objects.filter(user=user).values_list("team_id", flat=True):
            record_action(
                team=team_id,
                actor=user,
                action=Action.TOKEN_REVOKED,
                target=token,
                details={"prefix": token.prefix},
            )
    return token


def token_for_secret(secret: str) -> ApiToken | None:
    """The usable token (not revoked, not expired, active user) a bearer secret names, or None."""
    if not secret:
        return None
    token = ApiToken.objects.select_related("user").filter(token_hash=ApiToken.hash(secret)).first()
    now = timezone.now()
    if token is None or not token.user.is_active or not token.is_usable(now):
        return None
    # One cheap UPDATE; tells an admin which tokens are still in use.
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token


def authenticate_token(secret: str) -> AbstractBaseUser | None:
    """The active user a usable bearer token belongs to, or None."""
    token = token_for_secret(secret)
    return token.user if token else None
