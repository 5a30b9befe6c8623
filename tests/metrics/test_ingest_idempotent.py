"""Through the real path (events.jsonl read by the supervisor's ingestion): reading the same
lines again, as a supervisor does after a crash, leaves the same rows and summaries; so does
a long read stored in pieces."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import OperationalError

from modelcore.events import EVENTS_FILE, EventWriter
from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.runs import transitions
from webapp.runs.models import Run, RunLog, RunStatus
from workers import ingest
from workers.ingest import SKIPPED_KEY, Batch, ingest_new_events


def _tables(run: Run) -> tuple[list, list, list]:
    return (
        sorted(MetricPoint.objects.filter(run=run).values_list("key", "step", "value")),
        sorted(MetricKey.objects.filter(run=run).values_list("key", flat=True)),
        sorted(
            MetricSummary.objects.filter(run=run).values_list("key", "level", "bucket", "count", "min_value")
        ),
    )


def test_reingesting_the_same_lines_gives_the_same_rows(run, tmp_path: Path):
    queued = Run.objects.create(
        project=run.project, name="ingested", config=run.config, status=RunStatus.QUEUED
    )
    ingested = transitions.claim_for_launch(queued.id, "test-worker")
    with EventWriter(tmp_path) as writer:
        for step in range(3000):
            writer.metric(step, {"train/loss": 5.0 - step / 1000, "lr": 1e-3})
        for step in range(2000, 2500):  # a resumed attempt re-logs steps with new values
            writer.metric(step, {"train/loss": 9.0 if step == 2222 else 1.0})
    while ingest_new_events(ingested, tmp_path / EVENTS_FILE) is not None:
        pass
    first = _tables(ingested)
    assert len(first[0]) == 6000 and dict((s, v) for k, s, v in first[0] if k == "train/loss")[2222] == 9.0

    Run.objects.filter(pk=ingested.pk).update(events_offset=0)  # the offset a crash left behind
    ingested.events_offset = 0
    while ingest_new_events(ingested, tmp_path / EVENTS_FILE) is not None:
        pass
    assert _tables(ingested) == first


def _everything(run: Run) -> dict[str, object]:
    """What ingestion stores for a run."""
    run.refresh_from_db()
    points, keys, summaries = _tables(run)
    return {
        "points": points,
        "keys": keys,
        "summaries": summaries,
        "logs": list(RunLog.objects.filter(run=run).order_by("seq").values_list("seq", "level", "message")),
        "checkpoints": list(run.checkpoints.order_by("step").values_list("step", "path")),
        "run": (run.events_offset, run.step, run.last_loss, run.status),
    }


def _busy_file(run_dir: Path) -> int:
    """A trainer's file: metrics, a system stat after each step, logs, checkpoints, a bad line,
    a resumed stretch; returns its size."""
    with EventWriter(run_dir) as writer:
        writer.status("running")
        for step in range(1500):
            writer.metric(step, {"train/loss": 5.0 - step / 1000, "train/lr": 1e-3})
            writer.system({"cpu/util": step / 1500})  # placed at the step before it, a piece's edge between
            if step % 500 == 250:
                writer.log(f"at {step}")
                writer.checkpoint(step, f"ckpt-{step}")
    path = run_dir / EVENTS_FILE
    with open(path, "ab") as f:
        f.write(b"not an event\n")
    with EventWriter(run_dir) as writer:
        for step in range(1500, 1600):
            writer.metric(step, {"train/loss": 9.0 if step == 1555 else 1.0})
    return path.stat().st_size


def _claimed(run: Run, name: str) -> Run:
    queued = Run.objects.create(project=run.project, name=name, config=run.config, status=RunStatus.QUEUED)
    return transitions.claim_for_launch(queued.id, "test-worker")


def test_a_long_read_stored_in_pieces_stores_what_one_read_does(run, tmp_path: Path, monkeypatch):
    """A busy file's read is parsed and stored in pieces (the next parsed while the database
    stores the one before): one call still takes it all, and leaves the rows one read would,
    system stats placed at the step before them across a piece's edge, a bad line skipped."""
    size = _busy_file(tmp_path)

    def ingested(piece_bytes: int, name: str) -> tuple[Run, list[Batch]]:
        monkeypatch.setattr(ingest, "PIECE_BYTES", piece_bytes)
        claimed = _claimed(run, name)
        batches = []
        while (batch := ingest_new_events(claimed, tmp_path / EVENTS_FILE)) is not None:
            batches.append(batch)
        return claimed, batches

    whole, [one] = ingested(size + 1, "one read")
    pieces, [together] = ingested(4096, "pieces")  # ~40 pieces, a call still takes them all
    assert size > 40 * 4096
    assert _everything(pieces) == _everything(whole)
    assert together.stored_points == one.stored_points == 3100 + 1500  # metrics, system stats
    assert together.offset == one.offset == size and together.skipped == one.skipped == 1
    assert together.last_loss == one.last_loss == 1.0 and together.step == one.step == 1599
    assert together.running and len(together.checkpoints) == len(one.checkpoints) == 3
    # One transaction: live pages get its rows as they do one read's.
    assert sorted(together.live.points) == sorted(one.live.points) and len(one.live.points) == 4601
    assert [log.message for log in together.live.logs] == [log.message for log in one.live.logs]
    assert MetricPoint.objects.get(run=pieces, key="train/loss", step=1555).value == 9.0
    assert MetricPoint.objects.get(run=pieces, key=SKIPPED_KEY).value == 1.0


def test_a_long_read_is_stored_whole_or_not_at_all(run, tmp_path: Path, monkeypatch):
    """Its pieces share one transaction: the database lost at the third leaves nothing of the
    first two (nor an offset past them), and the next round stores them all."""
    size = _busy_file(tmp_path)
    monkeypatch.setattr(ingest, "PIECE_BYTES", 16 * 1024)
    claimed = _claimed(run, "outage")
    real_write = ingest.write_points
    writes = []

    def lost_at_the_third(run_id, points, **options):
        writes.append(len(points))
        if len(writes) == 3:
            raise OperationalError("server closed the connection unexpectedly")
        return real_write(run_id, points, **options)

    monkeypatch.setattr(ingest, "write_points", lost_at_the_third)
    with pytest.raises(OperationalError):
        ingest_new_events(claimed, tmp_path / EVENTS_FILE)
    assert claimed.events_offset == Run.objects.get(pk=claimed.pk).events_offset == 0
    assert (
        not MetricPoint.objects.filter(run=claimed).exists()
        and not RunLog.objects.filter(run=claimed).exists()
    )
    batch = ingest_new_events(claimed, tmp_path / EVENTS_FILE)
    assert batch.offset == claimed.events_offset == size and len(writes) > 10
    assert MetricPoint.objects.filter(run=claimed, key="train/loss").count() == 1600


def test_a_long_read_of_a_run_that_is_not_ours_any_more_stores_nothing(run, tmp_path: Path, monkeypatch):
    _busy_file(tmp_path)
    monkeypatch.setattr(ingest, "PIECE_BYTES", 16 * 1024)
    claimed = _claimed(run, "relaunched")
    Run.objects.filter(pk=claimed.pk).update(attempt=claimed.attempt + 1)
    batch = ingest_new_events(claimed, tmp_path / EVENTS_FILE)
    assert batch.lost_ownership and claimed.events_offset == 0
    assert not MetricPoint.objects.filter(run=claimed).exists()
