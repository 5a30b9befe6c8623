"""Reads about teams and roles, always from the point of view of one user."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Case, Count, QuerySet, When
from django.http import Http404
from django.utils import timezone

from webapp.accounts.models import ApiToken, Invite, Membership, Role, Team


def teams_of(user: AbstractBaseUser | AnonymousUser, *, min_role: str = Role.VIEWER) -> QuerySet[Team]:
    """Teams where ``user`` holds at least ``min_role``."""
    if not user.is_authenticated:
        return Team.objects.none()
    allowed = [r for r in Role.values if Role.rank(r) >= Role.rank(min_role)]
    return Team.objects.filter(memberships__user=user, memberships__role__in=allowed).order_by("name")


def role_in_team(user: AbstractBaseUser | AnonymousUser, team_id: int) -> str | None:
    """The user's role in the team, or None when they are not a member."""
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(user=user, team_id=team_id).values_list("role", flat=True).first()


def team_for(user: AbstractBaseUser | AnonymousUser, team_id: int) -> Team:
    """The team if ``user`` is a member; any other team raises Http404."""
    team = teams_of(user).filter(pk=team_id).first()
    if team is None:
        raise Http404("No such team.")
    return team


def teams_with_roles(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Membership]:
    """The user's memberships with their teams and member counts, for the teams page."""
    if not user.is_authenticated:
        return Membership.objects.none()
    return (
        Membership.objects.filter(user=user)
        .select_related("team")
        .annotate(member_count=Count("team__memberships", distinct=True))
        .order_by("team__name")
    )


def members_of(team: Team) -> QuerySet[Membership]:
    """A team's members, admins first (call with a team from ``team_for``)."""
    return (
        Membership.objects.filter(team=team)
        .select_related("user")
        .order_by(
            Case(When(role=Role.ADMIN, then=0), When(role=Role.MEMBER, then=1), default=2),
            "user__username",
        )
    )


def pending_invites(team: Team) -> QuerySet[Invite]:
    """Invites of ``team`` that can still be used, newest first."""
    return (
        Invite.objects.filter(team=team, accepted_at=None, revoked_at=None, expires_at__gt=timezone.now())
        .select_related("created_by")
        .order_by("-created_at")
    )


def invite_of_team(team: Team, invite_id: int) -> Invite:
    invite = Invite.objects.filter(team=team, pk=invite_id).select_related("team").first()
    if invite is None:
        raise Http404("No such invite.")
    return invite


def tokens_of(user: AbstractBaseUser) -> QuerySet[ApiToken]:
    """The user's own API tokens, newest first, revoked ones included (the list says so)."""
    return ApiToken.objects.filter(user=user).order_by("-created_at", "-id")
