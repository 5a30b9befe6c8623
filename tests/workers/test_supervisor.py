"""The supervisor with a stand-in trainer: ingestion, crash, cancel, ownership."""

from __future__ import annotations

import json
import os
import threading
import time

import psutil
import pytest
from django.db import connection

from modelcore.events import EVENTS_FILE, EventWriter
from webapp.metrics.models import MetricPoint
from webapp.runs import transitions
from webapp.runs.models import Checkpoint, Run, RunLog, RunStatus
from workers import ingest
from workers.supervisor import LAUNCHER_LOG, supervise


def claim(run: Run) -> Run:
    claimed = transitions.claim_for_launch(run.id, "test-worker")
    assert claimed is not None
    return claimed


def rows(run: Run) -> dict:
    return {
        "points": sorted(MetricPoint.objects.filter(run=run).values_list("key", "step", "value", "time")),
        "logs": sorted(RunLog.objects.filter(run=run).values_list("seq", "level", "message")),
        "checkpoints": sorted(Checkpoint.objects.filter(run=run).values_list("step", "path")),
    }


def living_members(pgid: int) -> list[int]:
    """Processes of the group that still run (a killed orphan is a zombie until init reaps it)."""
    alive = []
    for proc in psutil.process_iter(["status"]):
        try:
            if os.getpgid(proc.pid) == pgid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                alive.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return alive


def assert_group_gone(pgid: int) -> None:
    deadline = time.monotonic() + 2.0
    while living_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert living_members(pgid) == []


def test_completed_run_ingests_metrics_logs_and_checkpoints(make_run, fake_command):
    run = claim(make_run())
    assert supervise(run, command=fake_command("complete", steps=20), poll_seconds=0.1) == "completed"
    run.refresh_from_db()
    assert run.status == RunStatus.COMPLETED and run.error == ""
    assert run.step == 20
    assert run.last_loss == pytest.approx(5.0 / 20)
    assert run.pid and run.finished_at and run.attempt == 1
    losses = list(
        MetricPoint.objects.filter(run=run, key="train/loss").order_by("step").values_list("value", flat=True)
    )
    assert losses == pytest.approx([5.0 / s for s in range(1, 21)])
    assert MetricPoint.objects.filter(run=run, key="train/lr").count() == 20
    assert MetricPoint.objects.get(run=run, key="cpu/util").step == 20  # system stats sit at the latest step
    assert list(RunLog.objects.filter(run=run).values_list("message", flat=True)) == ["halfway there"]
    assert list(Checkpoint.objects.filter(run=run).values_list("step", "path")) == [
        (20, "checkpoints/step_000020")
    ]
    assert run.events_offset == (run.run_dir / EVENTS_FILE).stat().st_size
    assert json.loads((run.run_dir / "config.json").read_text())["model"]["d_model"] == 64
    assert_group_gone(run.pid)


def test_reingesting_from_offset_zero_gives_the_same_rows(make_run, fake_command):
    run = claim(make_run())
    supervise(run, command=fake_command("complete", steps=30), poll_seconds=0.1)
    before = rows(run)
    assert len(before["points"]) == 61
    # As after a crash between writing rows and committing the offset: read it all again.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.RUNNING, events_offset=0)
    run.refresh_from_db()
    batch = ingest.ingest_new_events(run, run.run_dir / EVENTS_FILE)
    assert batch is not None and not batch.lost_ownership
    assert rows(run) == before
    assert run.events_offset == (run.run_dir / EVENTS_FILE).stat().st_size


def test_torn_last_line_is_ingested_once_complete(make_run, fake_command):
    run = claim(make_run())
    path = run.run_dir / EVENTS_FILE
    with EventWriter(run.run_dir) as events:
        events.metric(1, {"train/loss": 4.0})
    whole = path.stat().st_size
    with open(path, "a") as f:
        f.write('{"seq": 2, "time": 1.0, "type": "metric", "step": 2, "values": {"train/lo')
    ingest.ingest_new_events(run, path)
    run.refresh_from_db()
    assert run.events_offset == whole
    assert list(MetricPoint.objects.filter(run=run).values_list("step", flat=True)) == [1]
    with open(path, "a") as f:
        f.write('ss": 3.5}}\n')
    ingest.ingest_new_events(run, path)
    run.refresh_from_db()
    assert sorted(MetricPoint.objects.filter(run=run).values_list("step", "value")) == [(1, 4.0), (2, 3.5)]
    assert run.events_offset == path.stat().st_size and run.last_loss == 3.5 and run.step == 2


def test_crash_mid_write_fails_and_keeps_the_whole_lines(make_run, fake_command):
    run = claim(make_run())
    assert supervise(run, command=fake_command("torn"), poll_seconds=0.1) == "failed"
    run.refresh_from_db()
    assert sorted(MetricPoint.objects.filter(run=run, key="train/loss").values_list("step", flat=True)) == [
        1,
        2,
    ]
    assert "exited with code 1 without reporting a final status" in run.error


def test_crash_before_any_event_fails_with_the_traceback(make_run, fake_command):
    run = claim(make_run())
    assert supervise(run, command=fake_command("crash"), poll_seconds=0.1) == "failed"
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED
    assert run.error.count("Traceback (most recent call last)") == 1
    assert "ImportError: fake trainer: no module named 'flash_attn_fake'" in run.error
    assert "--- attempt 1" in (run.run_dir / LAUNCHER_LOG).read_text()


def test_failure_reported_by_the_trainer_keeps_its_traceback(make_run, fake_command):
    run = claim(make_run())
    assert supervise(run, command=fake_command("fail"), poll_seconds=0.1) == "failed"
    run.refresh_from_db()
    assert "RuntimeError: fake trainer: loss is NaN at step 2" in run.error
    assert run.error.startswith("Traceback")


def test_stored_config_that_does_not_validate_fails_without_launching(make_run, fake_command):
    config = {"model": {"n_heads": 3}}  # 3 does not divide d_model
    run = claim(make_run(config=config))
    assert supervise(run, command=fake_command("complete"), poll_seconds=0.1) == "failed"
    run.refresh_from_db()
    assert "model.n_heads" in run.error and run.pid is None


def _supervise_in_thread(run: Run, **options) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def target():
        try:
            result["status"] = supervise(run, **options)
        finally:
            result["done_at"] = time.monotonic()
            connection.close()

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, result


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("mode", "killed"), [("until-term", False), ("ignore-term", True)], ids=["graceful", "sigkill"]
)
def test_cancel_stops_every_process_within_ten_seconds(make_run, fake_command, mode, killed):
    run = claim(make_run())
    thread, result = _supervise_in_thread(run, command=fake_command(mode), poll_seconds=0.2, kill_after=3.0)
    _wait_for(lambda: MetricPoint.objects.filter(run=run).count() >= 4, 30, "the first metrics")
    child = int((run.run_dir / "child.pid").read_text())
    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING
    requested = time.monotonic()
    Run.objects.filter(pk=run.pk).update(cancel_requested=True)  # what the web's request_cancel does
    thread.join(timeout=15)
    assert not thread.is_alive()
    assert result["done_at"] - requested < 10
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED == result["status"]
    assert ("killed" in run.error) is killed
    assert_group_gone(run.pid)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE
    if not killed:
        assert Checkpoint.objects.filter(run=run).exists()


@pytest.mark.django_db(transaction=True)
def test_a_relaunched_run_stops_the_old_trainer_and_keeps_the_new_attempt(make_run, fake_command):
    run = claim(make_run())
    thread, _ = _supervise_in_thread(
        run, command=fake_command("until-term"), poll_seconds=0.2, kill_after=3.0
    )
    _wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.RUNNING, 30, "running")
    Run.objects.filter(pk=run.pk).update(attempt=2, status=RunStatus.STARTING)  # as a resume would
    thread.join(timeout=15)
    assert not thread.is_alive()
    run.refresh_from_db()
    assert (run.status, run.attempt) == (RunStatus.STARTING, 2)
    assert_group_gone(run.pid)


@pytest.mark.django_db(transaction=True)
def test_a_run_marked_lost_while_its_supervisor_lives_is_taken_back(make_run, fake_command):
    run = claim(make_run())
    thread, result = _supervise_in_thread(run, command=fake_command("until-term"), poll_seconds=0.2)
    _wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.RUNNING, 30, "running")
    # As the sweep does when the supervisor's heartbeats could not reach the database.
    Run.objects.filter(pk=run.pk).update(status=RunStatus.LOST, error="Lost: no heartbeat")
    _wait_for(lambda: Run.objects.get(pk=run.pk).status == RunStatus.RUNNING, 10, "taken back")
    assert Run.objects.get(pk=run.pk).error == ""
    Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    thread.join(timeout=15)
    run.refresh_from_db()
    assert run.status == RunStatus.CANCELLED == result["status"]


def test_a_launcher_that_cannot_start_fails_the_run(make_run, tmp_path):
    def missing(config, run_dir):
        return [str(tmp_path / "no-such-launcher")], {}

    def too_many_gpus(config, run_dir):
        raise ValueError("parallel.num_processes: 8 processes asked for but only 1 GPU(s) are available")

    for build, expected in ((missing, "No such file"), (too_many_gpus, "only 1 GPU(s)")):
        run = claim(make_run())
        assert supervise(run, command=build) == "failed"
        run.refresh_from_db()
        assert run.error.startswith("Could not start the trainer") and expected in run.error


def test_files_of_an_earlier_run_with_the_same_id_are_set_aside(make_run, fake_command):
    run = make_run()
    run.run_dir.mkdir(parents=True)
    with EventWriter(run.run_dir) as events:
        events.metric(999, {"train/loss": 0.01})
    run = claim(run)
    supervise(run, command=fake_command("complete", steps=3), poll_seconds=0.1)
    assert not MetricPoint.objects.filter(run=run, step=999).exists()
    assert len(list(run.run_dir.parent.glob(f"{run.id}.stale-*"))) == 1


def test_checkpoints_of_an_earlier_run_with_the_same_id_are_set_aside(make_run, fake_command):
    """Checkpoints without an events file (a half-written folder) are never resumed from."""
    run = make_run()
    (run.run_dir / "checkpoints" / "step_000020").mkdir(parents=True)
    run = claim(run)
    assert supervise(run, command=fake_command("complete", steps=3), poll_seconds=0.1) == "completed"
    assert not (run.run_dir / "checkpoints" / "step_000020").exists()
    assert len(list(run.run_dir.parent.glob(f"{run.id}.stale-*"))) == 1


def test_a_database_outage_does_not_stop_training_or_lose_events(make_run, fake_command, monkeypatch):
    from django.db import OperationalError

    real_ingest = ingest.ingest_new_events
    failures = {"left": 3}

    def flaky_ingest(run, path):
        if failures["left"]:
            failures["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_ingest(run, path)

    monkeypatch.setattr(ingest, "ingest_new_events", flaky_ingest)
    run = claim(make_run())
    assert supervise(run, command=fake_command("complete", steps=25), poll_seconds=0.05) == "completed"
    assert failures["left"] == 0
    assert MetricPoint.objects.filter(run=run, key="train/loss").count() == 25


def test_each_checkpoint_is_offered_to_the_periodic_evals(make_run, fake_command, monkeypatch):
    from workers import supervisor

    offered = []
    monkeypatch.setattr(
        supervisor, "offer_checkpoint_to_evals", lambda run_id, step: offered.append((run_id, step))
    )
    run = claim(make_run())
    supervise(run, command=fake_command("complete", steps=12), poll_seconds=0.1)
    assert offered == [(run.id, 12)]


def test_sigterm_to_the_supervisor_stops_the_trainer_and_is_passed_on(make_run, fake_command):
    import signal as signals

    received = []
    previous = signals.signal(signals.SIGTERM, lambda signum, frame: received.append(signum))
    try:
        run = claim(make_run())
        # The fake writes a metric every 0.1 s; by 1.5 s it is training.
        timer = threading.Timer(1.5, os.kill, (os.getpid(), signals.SIGTERM))
        timer.start()
        assert supervise(run, command=fake_command("until-term"), poll_seconds=0.1) == "lost"
        timer.join()
    finally:
        signals.signal(signals.SIGTERM, previous)
    run.refresh_from_db()
    assert "worker shut down" in run.error
    assert Checkpoint.objects.filter(run=run).exists()
    assert_group_gone(run.pid)
    assert received == [signals.SIGTERM]  # Celery's own handler (solo pool) still hears of it
