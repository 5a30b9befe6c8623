"""Alice administers team "ml", Bob is a viewer there, Charlie is in another team."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from modelcore.config import resolve
from webapp.accounts.models import Membership, Role, Team
from webapp.projects.models import Project
from webapp.runs.models import Run, RunStatus


def make_user(username: str, team: Team | None, role: str = Role.MEMBER):
    user = get_user_model().objects.create_user(username=username, password=f"{username}-password-1")
    if team is not None:
        Membership.objects.create(team=team, user=user, role=role)
    return user


@pytest.fixture(autouse=True)
def fast_password_hashing(settings):
    # PBKDF2 costs about a second per user on a busy 2-core machine; these tests don't measure it.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="ml")


@pytest.fixture
def other_team(db) -> Team:
    return Team.objects.create(name="rivals")


@pytest.fixture
def alice(team):
    return make_user("alice", team, Role.ADMIN)


@pytest.fixture
def bob(team):
    return make_user("bob", team, Role.VIEWER)


@pytest.fixture
def charlie(other_team):
    return make_user("charlie", other_team, Role.ADMIN)


@pytest.fixture
def project(team, alice) -> Project:
    return Project.objects.create(team=team, name="llm", created_by=alice)


@pytest.fixture
def make_run(project, alice):
    def make(status: str = RunStatus.QUEUED, name: str = "r", **fields) -> Run:
        return Run.objects.create(
            project=project,
            name=name,
            preset="tiny-cpu",
            config=resolve("tiny-cpu").to_dict(),
            status=status,
            created_by=alice,
            **fields,
        )

    return make


@pytest.fixture
def run(make_run) -> Run:
    return make_run()


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login
