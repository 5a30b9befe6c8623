"""Writes for users, teams and API tokens: the one place each is created."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from webapp.accounts.models import ApiToken, Membership, Role, Team

TOKEN_PREFIX = "rw_"
DEMO_USERNAME = "demo"
DEMO_PROJECT = "demo"


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
    membership, _ = Membership.objects.update_or_create(team=team, user=user, defaults={"role": role})
    return membership


def create_api_token(user: AbstractBaseUser, name: str = "") -> str:
    """Create a token for ``user`` and return its secret; only the hash is stored."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    ApiToken.objects.create(user=user, name=name, token_hash=ApiToken.hash(secret), prefix=secret[:10])
    return secret


def authenticate_token(secret: str) -> AbstractBaseUser | None:
    """The active user a bearer token belongs to, or None."""
    if not secret:
        return None
    token = ApiToken.objects.select_related("user").filter(token_hash=ApiToken.hash(secret)).first()
    if token is None or not token.user.is_active:
        return None
    # One cheap UPDATE; tells an admin which tokens are still in use.
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=timezone.now())
    return token.user


@transaction.atomic
def ensure_demo_user() -> tuple[AbstractBaseUser, str, object]:
    """The demo login, its team and project ``demo``; safe to call on every start.

    The password comes from RUNWRIGHT_DEMO_PASSWORD, else it is generated once
    and kept in the data directory so that repeated starts print the same login.
    """
    from webapp.projects.services import create_project

    password = _demo_password()
    User = get_user_model()
    user, created = User.objects.get_or_create(username=DEMO_USERNAME)
    if created or not user.check_password(password):
        user.set_password(password)
        user.save()
    team = ensure_personal_team(user)
    project = team.projects.filter(name=DEMO_PROJECT).first() or create_project(
        user=user, name=DEMO_PROJECT, team=team, description="Runs started by the demo."
    )
    return user, password, project


def _demo_password() -> str:
    explicit = os.environ.get("RUNWRIGHT_DEMO_PASSWORD", "").strip()
    if explicit:
        return explicit
    path = settings.DATA_DIR / "demo-password"
    if path.exists():
        saved = path.read_text().strip()
        if saved:
            return saved
    password = secrets.token_urlsafe(9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(password + "\n")
    path.chmod(0o600)
    return password
