"""A real Celery worker trains real runs: the whole worker half of a run, end to end.

The worker is a subprocess (``celery -A workers worker``) on the same broker and
test database as this process: SQLite and the filesystem broker by default, or
PostgreSQL and Redis when RUNWRIGHT_DATABASE_URL / RUNWRIGHT_REDIS_URL are set.
Data is committed (``transactional_db``) so the worker sees it.
"""

from __future__ import annotations

import json
import signal
import time
import uuid

import psutil
import pytest
import service_processes
from django.conf import settings

from modelcore.config import RunConfig, preset
from webapp.accounts.models import Team
from webapp.metrics.models import MetricPoint
from webapp.projects.models import Project
from webapp.runs.models import FINAL_STATUSES, Run, RunStatus
from workers.tasks import launch_run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

RUN_TIMEOUT_S = 150


@pytest.fixture
def runs_dir():
    """The worker's run directories, unlike the unit tests' per-test folders: it shares them with us."""
    return settings.RUNS_DIR


@pytest.fixture
def make_run():
    team = Team.objects.create(name=f"integration-{uuid.uuid4().hex[:6]}")
    project = Project.objects.create(team=team, name="integration")

    def make(name: str, overrides: dict | None = None) -> Run:
        config = RunConfig.from_dict(overrides or {}, base=preset("tiny-cpu")).to_dict()  # validates
        return Run.objects.create(project=project, name=name, preset="tiny-cpu", config=config)

    return make


def wait_for(run: Run, predicate, timeout: float) -> Run:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run.refresh_from_db()
        if predicate(run):
            return run
        time.sleep(0.5)
    raise AssertionError(
        f"run {run.id} still {run.status} at step {run.step} after {timeout} s; launcher log:\n"
        + _launcher_log(run)
    )


def _launcher_log(run: Run) -> str:
    path = run.run_dir / "launcher.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(none)"


def _trainer_processes(run: Run) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if str(run.run_dir) in cmdline and proc.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(proc)
    return found


def subscribe(run_id: int):
    """A Redis subscriber when Redis is configured, else None."""
    if not settings.REDIS_URL:
        return None
    import redis

    messages: list[dict] = []
    pubsub = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(**{f"run:{run_id}": lambda m: messages.append(json.loads(m["data"]))})
    thread = pubsub.run_in_thread(sleep_time=0.05, daemon=True)
    return messages, thread, pubsub


def test_worker_trains_a_two_process_run_to_completion(worker_queue, make_run):
    run = make_run("integration-complete")
    subscription = subscribe(run.id)
    started = time.monotonic()
    launch_run.apply_async((run.id,), queue=worker_queue)
    run = wait_for(run, lambda r: r.status in FINAL_STATUSES, RUN_TIMEOUT_S)
    elapsed = time.monotonic() - started
    assert run.status == RunStatus.COMPLETED, run.error or _launcher_log(run)
    losses = list(
        MetricPoint.objects.filter(run=run, key="train/loss").order_by("step").values_list("step", "value")
    )
    max_steps = run.config["train"]["max_steps"]
    assert len(losses) >= max_steps // run.config["train"]["log_every"] - 1
    assert losses[-1][0] == max_steps == run.step
    assert losses[-1][1] < losses[0][1] - 0.5, losses  # it learns: bytes of Python source are not noise
    assert run.last_loss == pytest.approx(losses[-1][1])
    assert MetricPoint.objects.filter(run=run, key="val/loss").exists()
    assert run.logs.exists() and run.worker.startswith(worker_queue)
    assert run.events_offset == (run.run_dir / "events.jsonl").stat().st_size
    assert _trainer_processes(run) == []
    print(f"run completed in {elapsed:.1f} s")
    if subscription is not None:
        messages, thread, pubsub = subscription
        time.sleep(0.5)
        thread.stop()
        thread.join(timeout=5)
        pubsub.close()
        updates = [m["update"] for m in messages if m.get("update")]  # webapp.live's message format
        published = [p for u in updates for p in u["points"].get("train/loss", [])]
        assert published and published[-1] == [max_steps, pytest.approx(losses[-1][1])]
        assert {m["run_id"] for m in messages} == {run.id}
        assert updates[-1]["status"] == RunStatus.COMPLETED


def test_a_run_created_and_cancelled_by_the_web_stops_within_ten_seconds(worker_queue, monkeypatch):
    """The web's own write paths: create_run enqueues on commit, request_cancel sets the flag."""
    from django.contrib.auth import get_user_model

    from webapp import enqueue
    from webapp.accounts.services import ensure_personal_team
    from webapp.projects.services import create_project
    from webapp.runs.services import create_run, request_cancel

    # Only the route differs from production: onto this module's worker, not the shared default queue.
    send_task = enqueue.app.send_task
    monkeypatch.setattr(
        enqueue.app, "send_task", lambda name, args, **kw: send_task(name, args, queue=worker_queue)
    )
    alice = get_user_model().objects.create_user(f"alice-{uuid.uuid4().hex[:6]}", password="x" * 12)
    project = create_project(user=alice, name="web path", team=ensure_personal_team(alice))
    run = create_run(
        user=alice, project=project, preset="tiny-cpu", overrides={"train": {"max_steps": 100_000}}
    )
    run = wait_for(run, lambda r: r.status == RunStatus.RUNNING and r.step >= 2, RUN_TIMEOUT_S)
    assert _trainer_processes(run)
    requested = time.monotonic()
    request_cancel(user=alice, run=run)
    run = wait_for(run, lambda r: r.status in FINAL_STATUSES, 10)
    took = time.monotonic() - requested
    print(f"cancelled {took:.1f} s after the request")
    assert took < 10
    assert run.status == RunStatus.CANCELLED, run.error
    assert _trainer_processes(run) == []
    assert run.checkpoints.exists()  # the trainer saved on SIGTERM
    # What the run page's log shows while the supervisor waits for that checkpoint.
    assert run.logs.filter(message__contains="saving checkpoint").exists()


def test_trainer_crash_through_the_worker_fails_with_the_traceback(worker_queue, make_run):
    # Inside the dataset roots, so that the worker's path re-check lets the trainer start (and fail).
    missing = str(settings.DATASET_DIRS[0] / "nonexistent" / "corpus.txt")
    run = make_run("integration-crash", {"data": {"corpus": missing}})
    launch_run.apply_async((run.id,), queue=worker_queue)
    run = wait_for(run, lambda r: r.status in FINAL_STATUSES, RUN_TIMEOUT_S)
    assert run.status == RunStatus.FAILED
    assert "Traceback (most recent call last)" in run.error
    assert missing in run.error
    assert _trainer_processes(run) == []


def test_launching_twice_starts_one_trainer(worker_queue, make_run):
    run = make_run("integration-twice", {"train": {"max_steps": 10, "eval_every": 0}})
    launch_run.apply_async((run.id,), queue=worker_queue)
    launch_run.apply_async((run.id,), queue=worker_queue)
    run = wait_for(run, lambda r: r.status in FINAL_STATUSES, RUN_TIMEOUT_S)
    time.sleep(2)  # the second delivery runs after the first and must find nothing to do
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED and run.attempt == 1
    assert _launcher_log(run).count("--- attempt") == 1


def test_stopping_the_worker_stops_its_trainer_and_marks_the_run_lost(make_run, tmp_path, corpus_cache):
    run = make_run("integration-worker-stop", {"train": {"max_steps": 100_000}})
    with service_processes.training_worker(tmp_path / "worker.log", corpus_cache) as (queue, proc):
        launch_run.apply_async((run.id,), queue=queue)
        run = wait_for(run, lambda r: r.status == RunStatus.RUNNING and r.step >= 2, RUN_TIMEOUT_S)
        proc.send_signal(signal.SIGTERM)  # what docker stop / systemctl stop send: the main process only
        proc.wait(timeout=20)
    run.refresh_from_db()
    assert run.status == RunStatus.LOST
    assert "worker shut down" in run.error
    assert _trainer_processes(run) == []
    assert run.checkpoints.exists()  # stopped like a cancel: with a checkpoint to resume from
