"""A resumed attempt's supervisor and the events file the earlier attempt left behind (stand-in trainer).

The earlier attempt was lost with lines its supervisor never read: the new supervisor stores
them before its trainer appends, so no point, log or checkpoint of the run is skipped, and
their final status (the earlier attempt's) never decides how the new attempt ended.
"""

from __future__ import annotations

import json

from modelcore.events import EVENTS_FILE, EventWriter
from webapp.metrics.models import MetricPoint
from webapp.runs import transitions
from webapp.runs.models import AttemptKind, Run, RunAttempt, RunStatus
from workers.supervisor import supervise


def lost_first_attempt(run: Run, *, read_up_to_step: int, last_status: str) -> None:
    """Attempt 1 trained to step 6 (checkpoint at 4), its supervisor stored steps up to ``read_up_to_step``."""
    claimed = transitions.claim_for_launch(run.id, "host-a")
    run_dir = claimed.run_dir
    events = EventWriter(run_dir)
    events.status("running")
    offset = 0
    for step in range(1, 7):
        events.metric(step, {"train/loss": 10.0 - step})
        if step == read_up_to_step:
            offset = (run_dir / EVENTS_FILE).stat().st_size
        if step == 4:
            folder = run_dir / "checkpoints" / "step_000004"
            folder.mkdir(parents=True)
            (folder / "meta.json").write_text(json.dumps({"step": 4, "tokens_seen": 0}))
            events.checkpoint(4, "checkpoints/step_000004")
    events.status(last_status)
    Run.objects.filter(pk=run.pk).update(events_offset=offset, step=read_up_to_step)
    assert transitions.finish(run.id, 1, RunStatus.LOST, "Lost: no heartbeat")


def test_a_resumed_attempt_stores_the_earlier_attempts_unread_lines_first(make_run, fake_command):
    run = make_run("resumed")
    lost_first_attempt(run, read_up_to_step=2, last_status="running")
    assert transitions.queue_again(run.id, AttemptKind.RESUME)
    resumed = transitions.claim_for_launch(run.id, "host-b")
    assert supervise(resumed, command=fake_command("complete", 8), poll_seconds=0.05) == RunStatus.COMPLETED
    run.refresh_from_db()
    # Steps 3..6 of the first attempt were stored, then the new trainer's 1..8 replaced them.
    assert run.checkpoints.filter(step=4).exists()
    steps = sorted(MetricPoint.objects.filter(run=run, key="train/loss").values_list("step", flat=True))
    assert steps == list(range(1, 9))
    assert run.events_offset == (run.run_dir / EVENTS_FILE).stat().st_size
    attempt = RunAttempt.objects.get(run=run, number=2)
    assert (attempt.kind, attempt.from_step, attempt.status) == (AttemptKind.RESUME, 4, RunStatus.COMPLETED)


def test_the_earlier_attempts_final_status_does_not_decide_the_new_one(make_run, fake_command):
    run = make_run("crashes-on-resume")
    lost_first_attempt(run, read_up_to_step=6, last_status="cancelled")
    assert transitions.queue_again(run.id, AttemptKind.RESUME)
    resumed = transitions.claim_for_launch(run.id, "host-b")
    assert supervise(resumed, command=fake_command("crash"), poll_seconds=0.05) == RunStatus.FAILED
    run.refresh_from_db()
    assert "flash_attn_fake" in run.error
    first, second = RunAttempt.objects.filter(run=run).order_by("number")
    assert first.status == RunStatus.LOST and second.status == RunStatus.FAILED
