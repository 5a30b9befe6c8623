"""Faults, measured: break a real stack mid-run and check the run's state and every point.

Each test trains a real run (``python -m modelcore.train`` under the worker's
supervisor), breaks one thing while it trains, and ends with the run in the
state an operator expects and every metric point of its events file in the
database exactly once. PostgreSQL and Redis are broken through proxies (see
conftest.py), never for real: other work shares them.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import service_processes
from django.conf import settings
from fault_harness import (
    Stack,
    append_lines,
    events_path,
    kill_trainers,
    launcher_log,
    logged_events,
    point_differences,
    postgres_in_use,
    progress,
    trainer_final_status,
    trainer_processes,
    trainer_step,
    wait_until,
    worker_env,
)

from webapp.metrics.models import MetricPoint
from webapp.runs.models import FINAL_STATUSES, Run, RunStatus
from workers.ingest import SKIPPED_KEY
from workers.sweep import sweep_lost_runs
from workers.tasks import launch_run

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]
needs_postgres = pytest.mark.skipif(
    not postgres_in_use(), reason="PostgreSQL outage: needs RUNWRIGHT_DATABASE_URL (the service pass)"
)
needs_redis = pytest.mark.skipif(
    not settings.REDIS_URL, reason="Redis restart: needs RUNWRIGHT_REDIS_URL (the service pass)"
)

# Without progress (events written, offset ingested, status changed): a run that is
# merely slow on a loaded machine waits on, one that is stuck fails.
STALL_TIMEOUT_S = 90
LOST_AFTER_SECONDS = 5
DB_OUTAGE_S = 20  # at least; see the test
REDIS_OUTAGE_S = 5


def describe(run: Run, stack: Stack | None = None) -> str:
    run.refresh_from_db()
    text = f"run {run.id} is {run.status} at step {run.step} (trainer at {trainer_step(run)}); error: {run.error!r}"
    text += f"\nlauncher.log:\n{launcher_log(run)}"
    if stack is not None:
        lines = [line for line in stack.log().splitlines() if f"run {run.id}" in line]
        text += "\nworker log, this run's lines:\n" + "\n".join(lines[-40:])
        text += f"\nworker log, end:\n{stack.log()[-3000:]}"
    return text


def wait_training(run: Run, min_step: int, stack: Stack | None = None) -> None:
    """Until the worker has ingested the run's ``min_step`` (so there is something to lose)."""

    def training() -> bool:
        run.refresh_from_db()
        assert run.status not in FINAL_STATUSES, describe(run, stack)
        return run.status == RunStatus.RUNNING and run.step >= min_step

    wait_until(training, STALL_TIMEOUT_S, lambda: describe(run, stack), lambda: progress(run))


def wait_end(run: Run, stack: Stack, task_id: str) -> Run:
    """Until the run is final or its task ended without making it final (then the test says so)."""

    def ended() -> bool:
        run.refresh_from_db()
        return run.status in FINAL_STATUSES or stack.task_ended(task_id)

    wait_until(ended, STALL_TIMEOUT_S, lambda: describe(run, stack), lambda: progress(run))
    run.refresh_from_db()
    return run


def assert_every_point_once(run: Run) -> None:
    problems = point_differences(run)
    assert not problems, "\n".join(problems)
    assert run.events_offset == events_path(run).stat().st_size, "the events file was not read to its end"


def test_sigkill_of_the_worker_takes_the_trainer_down_and_the_run_ends_lost(
    make_run, tmp_path, corpus_cache, settings
):
    """The OOM killer or a hard time limit: no handler runs, the supervisor just vanishes."""
    settings.LOST_AFTER_SECONDS = LOST_AFTER_SECONDS  # the sweep below runs in this process, as beat would
    run = make_run("worker-sigkill", max_steps=100_000)
    env = worker_env(corpus_cache, None, None, RUNWRIGHT_LOST_AFTER_SECONDS=str(LOST_AFTER_SECONDS))
    with service_processes.celery_worker(tmp_path / "worker.log", own_queue=True, **env) as (queue, worker):
        launch_run.apply_async((run.id,), queue=queue)
        wait_training(run, 3)
        trainers = trainer_processes(run)
        assert trainers, describe(run)
        os.killpg(
            worker.pid, signal.SIGKILL
        )  # the worker and its pool child; the trainer has its own session
        worker.wait(timeout=10)
        killed_at = time.monotonic()

    problems = []
    try:
        wait_until(lambda: not trainer_processes(run), 10, lambda: "")
    except AssertionError:
        alive = [p.pid for p in trainer_processes(run)]
        problems.append(f"trainer pids {alive} still training 10 s after the worker was SIGKILLed (orphaned)")

    def swept_lost() -> bool:
        sweep_lost_runs()
        run.refresh_from_db()
        return run.status == RunStatus.LOST

    try:
        wait_until(swept_lost, 60, lambda: describe(run))
        print(f"run lost {time.monotonic() - killed_at:.1f} s after the kill: {run.error}")
    except AssertionError as exc:
        problems.append(f"run not lost within 60 s of the kill: {exc}")
    # The supervisor died between commits: what it committed is whole, and nothing else is there.
    problems += point_differences(run, end=run.events_offset)
    assert run.events_offset > 0, "nothing was ingested before the kill: the test measured nothing"
    assert not problems, "\n".join(problems)


def test_sigkill_of_the_trainer_fails_the_run_with_every_point_kept(stack, make_run):
    run = make_run("trainer-sigkill", max_steps=100_000)
    task_id = stack.launch(run)
    wait_training(run, 3, stack)
    assert kill_trainers(run), describe(run, stack)
    run = wait_end(run, stack, task_id)
    assert run.status == RunStatus.FAILED, describe(run, stack)
    assert "killed by signal 9" in run.error, run.error  # says what happened, not just "failed"
    assert trainer_processes(run) == []
    assert_every_point_once(run)


def test_a_corrupt_event_mid_file_is_skipped_with_a_warning_and_the_run_completes(stack, make_run):
    run = make_run("corrupt-event")
    task_id = stack.launch(run)
    wait_training(run, 5, stack)
    injected_at = trainer_step(run)
    # Between the trainer's own lines: garbage, a step that overflows, a value that is no number.
    # Valid seqs far above the trainer's, so each line is refused for its own fault.
    append_lines(
        events_path(run),
        [
            b"this is not json {",
            b'{"seq": 1000000000001, "time": 0, "type": "metric", "step": 1e999, "values": {"fault/overflow": 1.0}}',
            b'{"seq": 1000000000002, "time": 0, "type": "metric", "step": 7, "values": {"fault/not-a-number": "high"}}',
        ],
    )
    run = wait_end(run, stack, task_id)
    assert run.status == RunStatus.COMPLETED, describe(run, stack)
    assert trainer_step(run) > injected_at, "the corrupt lines must sit mid-file, before later trainer lines"
    assert_every_point_once(run)
    assert not MetricPoint.objects.filter(run=run, key__startswith="fault/").exists()
    # One warning per skipped line, besides whatever warnings the trainer itself logged.
    trainer_warnings = sum(
        1 for e in logged_events(events_path(run)) if e.get("type") == "log" and e.get("level") == "warning"
    )
    warnings = run.logs.filter(level="warning").count()
    assert warnings == trainer_warnings + 3, "one warning in the run's log per skipped line; logs: " + repr(
        list(run.logs.values_list("level", "message"))
    )
    skipped = MetricPoint.objects.filter(run=run, key=SKIPPED_KEY).order_by("-step").first()
    assert skipped is not None and skipped.value == 3, f"skipped lines counted on {SKIPPED_KEY}: {skipped}"
    print("warnings in the run's log:", warnings)


@needs_postgres
@pytest.mark.services
def test_postgres_refusing_connections_for_20s_mid_run_still_completes_the_run(stack, make_run):
    """The outage starts half-way and lasts 20 s, and at least until the trainer has finished: it
    logs its last steps, validates, checkpoints and exits while the database is away, so the
    supervisor must hold on to all of it and store it, final status included, once it is back."""
    run = make_run("postgres-outage")
    task_id = stack.launch(run)
    wait_training(run, run.config["train"]["max_steps"] // 2, stack)
    assert stack.db_proxy.accepted > 0, "the worker does not reach PostgreSQL through the proxy"
    step_at_outage, began = run.step, time.monotonic()
    stack.db_proxy.down()
    try:
        wait_until(
            lambda: trainer_final_status(run) and time.monotonic() - began >= DB_OUTAGE_S,
            STALL_TIMEOUT_S,
            lambda: f"the trainer did not finish during the outage\n{describe(run, stack)}",
            lambda: events_path(run).stat().st_size,
        )
    finally:
        stack.db_proxy.up()
    print(f"PostgreSQL refused connections for {time.monotonic() - began:.0f} s from step {step_at_outage}")
    run = wait_end(run, stack, task_id)
    assert run.status == RunStatus.COMPLETED, describe(run, stack)
    assert_every_point_once(run)


@needs_redis
@pytest.mark.services
def test_redis_restarted_mid_run_the_run_completes_and_live_updates_resume(stack, make_run):
    """Redis is the broker and the live channel: every worker connection drops, then it comes back."""
    import redis

    run = make_run("redis-restart", max_steps=300)  # outlasts the outage on a quiet machine
    received: list[tuple[float, dict]] = []
    # This process listens on Redis directly, like the web's SSE view on another host.
    pubsub = redis.Redis.from_url(settings.REDIS_URL).pubsub(ignore_subscribe_messages=True)

    # Messages without an update only say "something changed" (webapp.live); keep the updates.
    def on_message(m: dict) -> None:
        update = json.loads(m["data"]).get("update")
        if update is not None:
            received.append((time.monotonic(), update))

    pubsub.subscribe(**{f"run:{run.id}": on_message})
    listener = pubsub.run_in_thread(sleep_time=0.05, daemon=True)
    try:
        task_id = stack.launch(run)
        wait_training(run, 3, stack)
        assert stack.redis_proxy.accepted > 0, "the worker does not reach Redis through the proxy"
        with stack.redis_proxy.outage(REDIS_OUTAGE_S):
            pass
        back_at, step_at_return = time.monotonic(), trainer_step(run)
        assert trainer_final_status(run) is None, "the trainer ended during the outage: not mid-run"
        run = wait_end(run, stack, task_id)
        wait_until(
            lambda: received and received[-1][1]["status"] in FINAL_STATUSES,
            10,
            lambda: f"no final status published; last: {received[-1:]}",
        )
    finally:
        listener.stop()
        listener.join(timeout=5)
        pubsub.close()
    assert run.status == RunStatus.COMPLETED, describe(run, stack)
    assert_every_point_once(run)
    after = [m for t, m in received if t > back_at]
    live_steps = {step for m in after for step, _ in m["points"].get("train/loss", [])}
    assert live_steps and max(live_steps) == run.config["train"]["max_steps"], (
        f"live updates did not resume after Redis came back (trainer at step {step_at_return} then); "
        f"train/loss steps published after: {sorted(live_steps)}"
    )
    assert after[-1]["status"] == RunStatus.COMPLETED
