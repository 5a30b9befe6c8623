"""Writes for users, teams and API tokens: the one place each is created."""

from __future__ import annotations

import secrets

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction
from django.utils import timezone

from webapp.accounts.models import ApiToken, Membership, Role, Team

TOKEN_PREFIX = "rw_"


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
