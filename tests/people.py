"""Users for tests: Alice, Bob and Charlie are fixtures in tests/conftest.py built with this."""

from __future__ import annotations

from django.contrib.auth import get_user_model

from webapp.accounts.models import Membership, Role, Team


def make_user(username: str, team: Team | None, role: str = Role.MEMBER):
    """A user whose password is ``<username>-password-1``, in ``team`` with ``role``."""
    user = get_user_model().objects.create_user(username=username, password=f"{username}-password-1")
    if team is not None:
        Membership.objects.create(team=team, user=user, role=role)
    return user
