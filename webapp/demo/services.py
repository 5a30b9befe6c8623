"""The demo login: user ``demo`` with a personal team and project ``demo`` (``manage.py demo``)."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from webapp.accounts.services import ensure_personal_team
from webapp.projects.models import Project
from webapp.projects.services import create_project

DEMO_USERNAME = "demo"
DEMO_PROJECT = "demo"


@transaction.atomic
def ensure_demo_user() -> tuple[AbstractBaseUser, str, Project]:
    """The demo login, its team and project ``demo``; safe to call on every start.

    The password comes from RUNWRIGHT_DEMO_PASSWORD, else it is generated once
    and kept in the data directory so that repeated starts print the same login.
    """
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
