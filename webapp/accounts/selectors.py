"""Reads about teams and roles, always from the point of view of one user."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet

from webapp.accounts.models import Membership, Role, Team


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
