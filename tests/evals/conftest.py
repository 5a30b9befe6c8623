"""Alice administers team "ml", Bob is a viewer there, Charlie administers another team.

Run with ``--ds tests.evals.settings`` until webapp.evals is in INSTALLED_APPS.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model

from modelcore.config import resolve
from webapp.accounts.models import Membership, Role, Team
from webapp.projects.models import Project
from webapp.runs.models import Checkpoint, Run, RunStatus


def make_user(username: str, team: Team | None, role: str):
    user = get_user_model().objects.create_user(username=username, password=f"{username}-password-1")
    if team is not None:
        Membership.objects.create(team=team, user=user, role=role)
    return user


@pytest.fixture
def data_dir(settings, tmp_path) -> Path:
    """A fresh data directory per test (uploads, results files, models), for in-process tests."""
    settings.DATA_DIR = tmp_path / "data"
    settings.RUNS_DIR = settings.DATA_DIR / "runs"
    settings.DATA_DIR.mkdir()
    return settings.DATA_DIR


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="ml")


@pytest.fixture
def alice(team):
    return make_user("alice", team, Role.ADMIN)


@pytest.fixture
def bob(team):
    return make_user("bob", team, Role.VIEWER)


@pytest.fixture
def charlie(db):
    return make_user("charlie", Team.objects.create(name="rivals"), Role.ADMIN)


@pytest.fixture
def project(team, alice) -> Project:
    return Project.objects.create(team=team, name="llm", created_by=alice)


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


def results_payload(
    task_scores: dict[str, dict[str, float]], samples: dict[str, list] | None = None, n_shot: int = 0
) -> dict:
    """A results dict in lm-eval's schema, as our evaluator and lm-eval write it."""
    out = {
        "results": {
            task: {"alias": task, **{f"{k},none": v for k, v in metrics.items()}}
            for task, metrics in task_scores.items()
        },
        "n-shot": {task: n_shot for task in task_scores},
        "higher_is_better": {
            task: {
                k: not k.endswith("perplexity") and k != "bits_per_byte"
                for k in metrics
                if not k.endswith("_stderr")
            }
            for task, metrics in task_scores.items()
        },
        "versions": {task: 1.0 for task in task_scores},
        "config": {"model": "hf"},
    }
    if samples is not None:
        out["samples"] = samples
    return out


def mc_samples(correct: list[int], predictions: list[int] | None = None) -> list[dict]:
    return [
        {
            "doc_id": i,
            "prompt": f"Question {i}?",
            "choices": ["a", "b", "c"],
            "gold": 0,
            "prediction": (predictions[i] if predictions else (0 if c else 1)),
            "metrics": {"acc": float(c), "acc_norm": float(c)},
        }
        for i, c in enumerate(correct)
    ]


def write_results_file(job, payload: dict) -> None:
    job.job_dir.mkdir(parents=True, exist_ok=True)
    Path(job.results_file).write_text(json.dumps(payload))
