"""Claiming a run is what makes launching idempotent."""

from __future__ import annotations

from webapp.runs import transitions
from webapp.runs.models import RunStatus
from workers.tasks import launch_run


def test_only_a_queued_run_can_be_claimed_and_only_once(make_run):
    run = make_run()
    claimed = transitions.claim_for_launch(run.id, "celery@gpu-1")
    assert claimed is not None
    assert (claimed.status, claimed.attempt, claimed.worker) == (RunStatus.STARTING, 1, "celery@gpu-1")
    assert claimed.started_at is not None and claimed.heartbeat_at is not None
    assert transitions.claim_for_launch(run.id, "celery@gpu-2") is None
    claimed.refresh_from_db()
    assert (claimed.attempt, claimed.worker) == (1, "celery@gpu-1")


def test_launch_task_leaves_a_run_that_is_not_queued_alone(make_run):
    cancelled = make_run(status=RunStatus.CANCELLED)
    assert launch_run.run(cancelled.id) is None  # the task body, called in-process, not eager mode
    assert launch_run.run(987654) is None  # deleted run
    cancelled.refresh_from_db()
    assert (cancelled.status, cancelled.attempt) == (RunStatus.CANCELLED, 0)


def test_progress_moves_starting_to_running_and_stores_the_offset(make_run):
    run = transitions.claim_for_launch(make_run().id, "w")
    progress = transitions.Progress(offset=120, step=7, last_loss=2.5, running=True)
    assert transitions.record_progress(run.id, run.attempt, progress)
    run.refresh_from_db()
    assert (run.status, run.events_offset, run.step, run.last_loss) == (RunStatus.RUNNING, 120, 7, 2.5)
    assert not transitions.record_progress(run.id, run.attempt + 1, progress)  # another attempt's write
