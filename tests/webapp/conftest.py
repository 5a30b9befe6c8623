"""Runs and clients for the web tests (Alice, Bob and Charlie come from tests/conftest.py)."""

from __future__ import annotations

import pytest

from modelcore.config import resolve
from webapp.runs.models import Run, RunStatus


@pytest.fixture
def make_run(project, alice):
    def make(status: str = RunStatus.QUEUED, name: str = "r", **fields) -> Run:
        return Run.objects.create(
            project=project,
            name=name,
            **{"preset": "tiny-cpu", "config": resolve("tiny-cpu").to_dict(), **fields},
            status=status,
            created_by=alice,
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
