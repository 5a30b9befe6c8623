"""Eval fixtures: a data directory per test and a run with checkpoints (people come from tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcore.config import resolve
from webapp.runs.models import Checkpoint, Run, RunStatus


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    """A fresh data directory per test (uploads, results files, models), for in-process tests."""
    settings.DATA_DIR = tmp_path / "data"
    settings.RUNS_DIR = settings.DATA_DIR / "runs"
    settings.DATA_DIR.mkdir()
    return settings.DATA_DIR


@pytest.fixture
def run(project, alice) -> Run:
    """A completed tiny run with checkpoint rows at steps 20 and 40 (no weights on disk)."""
    run = Run.objects.create(
        project=project,
        name="tiny",
        preset="tiny-cpu",
        config=resolve("tiny-cpu").to_dict(),
        status=RunStatus.COMPLETED,
        created_by=alice,
    )
    for step in (20, 40):
        Checkpoint.objects.create(run=run, step=step, path=f"checkpoints/step_{step:06d}")
    return run


@pytest.fixture
def client_for(client):
    def login(user):
        client.force_login(user)
        return client

    return login
