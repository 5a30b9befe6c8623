"""What ``manage.py demo`` sets up: the demo login (user ``demo``, a personal team, project ``demo``),
a long live run, a short run that completes in the first minute, and, once it has, an evaluation of
its final checkpoint and of the live run's latest on the built-in tasks with a report comparing
them: every page of the product has something to show."""

from __future__ import annotations

import os
import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from webapp.accounts.services import ensure_personal_team
from webapp.evals.models import ModelSource, Report
from webapp.evals.services import ModelRef, create_eval_jobs
from webapp.evals.sources import available_tasks
from webapp.projects.models import Project
from webapp.projects.services import create_project
from webapp.runs.models import Run, RunStatus
from webapp.runs.services import create_run

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


# The long run: still growing when the browser opens. tiny-cpu trains about 55 steps/s on two
# cores, so this streams for about 6 minutes (2000 logged points).
LIVE_RUN = "demo: tiny-cpu"
LIVE_RUN_OVERRIDES = {
    "train": {
        "max_steps": 20_000,
        "log_every": 10,
        "eval_every": 500,
        "checkpoint_every": 1_000,  # the report compares the short run with the latest of these
        "keep_last": 2,
        "sample_every": 2_000,
        "system_metrics_every_s": 5,
    }
}
# The short run: done within the first minute, with samples, validation, a pruned checkpoint.
SHORT_RUN = "demo: short run"
SHORT_RUN_OVERRIDES = {
    "train": {
        "max_steps": 400,
        "log_every": 5,
        "eval_every": 50,
        "checkpoint_every": 100,
        "keep_last": 2,
        "sample_every": 100,
        "sample_prompts": "def |import |class ",
        "system_metrics_every_s": 2,
    }
}
REPORT = "demo: short run vs live run"
EVAL_LIMIT = 40  # samples per task: an eval of a tiny model takes seconds


def queue_demo_runs(user: AbstractBaseUser, project: Project) -> list[Run]:
    """The long live run and the short one, both queued now (the worker runs them side by side)."""
    return [
        create_run(user=user, project=project, name=name, preset="tiny-cpu", overrides=overrides)
        for name, overrides in ((LIVE_RUN, LIVE_RUN_OVERRIDES), (SHORT_RUN, SHORT_RUN_OVERRIDES))
    ]


def advance_demo(user: AbstractBaseUser, project: Project) -> Report | None:
    """Once the short run has completed: evaluate its final checkpoint and the live run's latest on
    the built-in tasks, with a report comparing the two. Safe to call every tick: it does this once
    (the report is the mark) and waits while either run has no checkpoint yet."""
    existing = Report.objects.filter(project=project, name=REPORT).first()
    if existing is not None:
        return existing
    runs = Run.objects.filter(project=project)
    short = runs.filter(name=SHORT_RUN, status=RunStatus.COMPLETED).order_by("-id").first()
    live = runs.filter(name=LIVE_RUN).order_by("-id").first()
    if short is None or live is None:
        return None
    steps = [r.checkpoints.order_by("-step").values_list("step", flat=True).first() for r in (short, live)]
    if None in steps:
        return None
    tasks = [t.name for t in available_tasks(project) if t.origin == "built-in"]
    jobs = create_eval_jobs(
        user=user,
        project=project,
        models=[
            ModelRef(ModelSource.CHECKPOINT, run_id=r.id, step=s)
            for r, s in zip((short, live), steps, strict=True)
        ],
        tasks=tasks,
        limit=EVAL_LIMIT,
        report_name=REPORT,
    )
    return Report.objects.filter(project=project, name=REPORT, jobs__in=jobs).first()
