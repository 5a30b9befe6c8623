"""Fixtures for the worker tests: a project, runs in it, the fake trainer, and a real worker's queue."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import service_processes

from modelcore.config import RunConfig, preset
from webapp.accounts.models import Team
from webapp.projects.models import Project
from webapp.runs.models import Run

FAKE_TRAINER = Path(__file__).with_name("fake_trainer.py")


@pytest.fixture(autouse=True)
def runs_dir(settings, tmp_path) -> Path:
    """Each test's runs in their own folder (a rolled-back test reuses run ids)."""
    settings.RUNS_DIR = tmp_path / "runs"
    return settings.RUNS_DIR


@pytest.fixture
def project(db) -> Project:
    return Project.objects.create(team=Team.objects.create(name="workers-team"), name="workers")


@pytest.fixture
def make_run(project) -> Callable[..., Run]:
    def make(name: str = "run", config: dict | None = None, **fields) -> Run:
        return Run.objects.create(
            project=project,
            name=name,
            preset="tiny-cpu",
            config=config or preset("tiny-cpu").to_dict(),
            **fields,
        )

    return make


def _fake_command(mode: str, steps: int = 20, *extra: str):
    def build(config: RunConfig, run_dir: Path) -> tuple[list[str], dict[str, str]]:
        argv = [
            sys.executable,
            str(FAKE_TRAINER),
            "--run-dir",
            str(run_dir),
            "--mode",
            mode,
            "--steps",
            str(steps),
            *extra,
        ]
        return argv, {"PYTHONUNBUFFERED": "1"}

    return build


@pytest.fixture
def fake_command():
    """``fake_command(mode, steps, *extra_args)``: a command builder that starts the fake trainer in ``mode``."""
    return _fake_command


# The modules that run a real Celery worker (test_celery_integration, test_resume_worker):
# one worker for each module's tests, on a queue of its own.


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus-cache")


@pytest.fixture(scope="module")
def worker_queue(django_db_setup, tmp_path_factory, corpus_cache):
    """A real worker's queue, started once per module that asks for it."""
    log = tmp_path_factory.mktemp("worker") / "worker.log"
    with service_processes.training_worker(log, corpus_cache) as (queue, _):
        yield queue
