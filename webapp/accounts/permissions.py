"""Role checks shared by pages, API and streams (DESIGN.md, security model).

Visibility (404 for another team's object) is the selectors' job; these checks
answer the second question: may this member do this action here.
"""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import PermissionDenied

from webapp.accounts.models import Role
from webapp.accounts.selectors import role_in_team

ACTION_VERBS = {Role.MEMBER: "launch or cancel runs", Role.ADMIN: "administer this team"}


def has_role(user: AbstractBaseUser | AnonymousUser, team_id: int, role: str) -> bool:
    held = role_in_team(user, team_id)
    return held is not None and Role.rank(held) >= Role.rank(role)


def require_role(user: AbstractBaseUser | AnonymousUser, team_id: int, role: str) -> None:
    """Raise PermissionDenied, with a message a person can act on, unless ``user`` holds ``role``."""
    if not has_role(user, team_id, role):
        verb = ACTION_VERBS.get(role, "do this")
        raise PermissionDenied(f"You need the {role} role in this team to {verb}.")
