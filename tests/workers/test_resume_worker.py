"""A real worker resumes real runs: cancelled and resumed by hand, lost and resumed on its own.

The worker is a subprocess (``celery -A workers worker``) on the same broker and database as
this process (SQLite and the filesystem broker by default, PostgreSQL and Redis in CI's
second pass); the trainer is the real one on the tiny CPU preset. The web's own write paths
send the launches (``resume_run``, the sweep's ``recover_lost_run``); only their route
differs from production: onto this module's worker's queue.
"""

from __future__ import annotations

import os
import signal
import time
import uuid

import pytest
import service_processes
from django.conf import settings
from django.contrib.auth import get_user_model

from modelcore.config import RunConfig, preset
from webapp import enqueue
from webapp.accounts.models import Role, Team
from webapp.accounts.services import add_member
from webapp.metrics.models import MetricPoint
from webapp.projects.models import Project
from webapp.runs.models import FINAL_STATUSES, AttemptKind, Run, RunAttempt, RunStatus
from webapp.runs.services import request_cancel, resume_run
from workers import sweep
from workers.tasks import launch_run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TIMEOUT_S = 180
MAX_STEPS = 30
LOG_EVERY = 2


@pytest.fixture
def runs_dir():
    """The worker's run directories, unlike the unit tests' per-test folders: it shares them with us."""
    return settings.RUNS_DIR


@pytest.fixture
def to_worker(monkeypatch, worker_queue) -> str:
    """The web's launches go to this module's worker (the default queue is other suites' too).

    A send that names its queue (``apply_async(queue=...)``) keeps it.
    """
    send_task = enqueue.app.send_task
    monkeypatch.setattr(
        enqueue.app,
        "send_task",
        lambda name, args=None, kwargs=None, **options: send_task(
            name, args, kwargs, **{**options, "queue": options.get("queue") or worker_queue}
        ),
    )
    return worker_queue


@pytest.fixture
def member():
    team = Team.objects.create(name=f"resume-{uuid.uuid4().hex[:6]}")
    user = get_user_model().objects.create_user(f"dana-{uuid.uuid4().hex[:6]}", password="x" * 12)
    add_member(team, user, Role.MEMBER)
    return user, Project.objects.create(team=team, name="resume")


def make_run(project: Project, name: str, **train) -> Run:
    overrides = {
        "parallel": {"num_processes": 1},
        "train": {"max_steps": MAX_STEPS, "log_every": LOG_EVERY, "eval_every": 0, **train},
    }
    config = RunConfig.from_dict(overrides, base=preset("tiny-cpu")).to_dict()
    return Run.objects.create(project=project, name=name, preset="tiny-cpu", config=config)


def wait_for(run: Run, predicate, timeout: float = TIMEOUT_S) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if predicate(run):
            return run
        time.sleep(0.3)
    log = run.run_dir / "launcher.log"
    raise AssertionError(
        f"run {run.id} still {run.status} at step {run.step} after {timeout} s; launcher log:\n"
        + (log.read_text(errors="replace")[-4000:] if log.exists() else "(none)")
    )


def loss_steps(run: Run) -> list[int]:
    return list(
        MetricPoint.objects.filter(run=run, key="train/loss").order_by("step").values_list("step", flat=True)
    )


def assert_points_continue(run: Run) -> None:
    """One train/loss point per logged step from the first to the last, none missing or doubled."""
    steps = loss_steps(run)
    assert steps == list(range(steps[0], MAX_STEPS + 1, LOG_EVERY)), steps
    assert steps[-1] == MAX_STEPS == run.step


def test_a_cancelled_run_resumes_from_its_checkpoint_and_completes(to_worker, member):
    user, project = member
    run = make_run(project, "cancel-then-resume")
    launch_run.apply_async((run.id,), queue=to_worker)
    run = wait_for(run, lambda r: r.status == RunStatus.RUNNING and r.step >= 6)
    request_cancel(user=user, run=run)
    run = wait_for(run, lambda r: r.status in FINAL_STATUSES)
    assert run.status == RunStatus.CANCELLED, run.error
    saved = run.checkpoints.order_by("-step").values_list("step", flat=True).first()
    assert saved is not None and 6 <= saved < MAX_STEPS  # saved on SIGTERM, part way
    points_before = loss_steps(run)

    resume_run(user=user, run=run)
    run = wait_for(run, lambda r: r.attempt == 2 and r.status in FINAL_STATUSES)
    assert run.status == RunStatus.COMPLETED, run.error
    first, second = RunAttempt.objects.filter(run=run).order_by("number")
    assert (first.kind, first.status) == (AttemptKind.LAUNCH, RunStatus.CANCELLED)
    assert (second.kind, second.status, second.from_step) == (AttemptKind.RESUME, RunStatus.COMPLETED, saved)
    assert first.ended_at <= second.started_at <= second.ended_at
    # The trainer continued from the checkpoint, not from step 0 ...
    assert run.logs.filter(message__contains=f"(step {saved})", message__startswith="resumed from").exists()
    # ... on the same chart: the first attempt's points stay, the new ones follow on.
    assert set(points_before) <= set(loss_steps(run))
    assert_points_continue(run)
    assert run.events_offset == (run.run_dir / "events.jsonl").stat().st_size
    launcher_log = (run.run_dir / "launcher.log").read_text()
    assert launcher_log.count("--- attempt") == 2


def test_a_lost_run_is_resumed_on_its_own_by_another_worker(
    to_worker, member, tmp_path, corpus_cache, settings
):
    user, project = member
    run = make_run(project, "lost-then-recovered", checkpoint_every=4, max_restarts=1)
    with service_processes.training_worker(tmp_path / "doomed.log", corpus_cache) as (doomed_queue, doomed):
        launch_run.apply_async((run.id,), queue=doomed_queue)
        run = wait_for(
            run, lambda r: r.status == RunStatus.RUNNING and r.checkpoints.filter(step__gte=8).exists()
        )
        os.killpg(doomed.pid, signal.SIGKILL)  # the machine is gone: no goodbye, no final status
        doomed.wait(timeout=20)
    checkpoint = run.checkpoints.order_by("-step").values_list("step", flat=True).first()

    settings.LOST_AFTER_SECONDS = 2
    deadline = time.monotonic() + 30
    # Beat's task, run here: it marks the run lost, then one period later resumes it.
    marked_lost = False
    while run.attempt < 2 and run.status != RunStatus.QUEUED:
        marked_lost |= run.id in sweep.sweep_lost_runs()
        run.refresh_from_db()
        assert time.monotonic() < deadline, (
            f"the sweep did not resume the run: {run.status}, attempt {run.attempt}, "
            f"heartbeat {run.heartbeat_at}, error {run.error!r}"
        )
        time.sleep(0.5)
    assert marked_lost

    run = wait_for(run, lambda r: r.attempt == 2 and r.status in FINAL_STATUSES)
    assert run.status == RunStatus.COMPLETED, run.error
    first, second = RunAttempt.objects.filter(run=run).order_by("number")
    assert first.status == RunStatus.LOST and "no heartbeat" in first.reason and first.ended_at
    assert second.kind == AttemptKind.RECOVERY and second.status == RunStatus.COMPLETED
    assert second.worker.startswith(to_worker) and second.from_step is not None
    assert second.from_step >= checkpoint  # the latest checkpoint, read after the last events
    assert_points_continue(run)
