from __future__ import annotations

from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command

from webapp.accounts.services import authenticate_token
from webapp.projects.models import Project


def run_command(*args, **kwargs) -> str:
    out = StringIO()
    call_command(*args, stdout=out, **kwargs)
    return out.getvalue()


def test_create_token_prints_a_working_token(alice):
    token = run_command("create_token", "alice").strip()
    assert token.startswith("rw_") and authenticate_token(token) == alice
    assert authenticate_token(token + "x") is None


def test_create_token_for_unknown_user_fails(db):
    with pytest.raises(CommandError, match="no user named"):
        run_command("create_token", "nobody")


def test_create_demo_user_is_idempotent(db, settings, tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWRIGHT_DEMO_PASSWORD", raising=False)
    settings.DATA_DIR = tmp_path
    first = run_command("create_demo_user")
    second = run_command("create_demo_user")
    assert first == second and "username: demo" in first
    password = first.split("password: ")[1].split()[0]
    user = get_user_model().objects.get(username="demo")
    assert user.check_password(password)
    assert Project.objects.filter(name="demo", team__memberships__user=user).count() == 1
