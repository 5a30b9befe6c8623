"""Through the real path (events.jsonl read by the supervisor's ingestion): reading the same
lines again, as a supervisor does after a crash, leaves the same rows and summaries; so does
a long read stored in pieces."""

from __future__ import annotations

from pathlib import Path

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
    """What ingestion stores for a run, as the pieces of a read must leave it: the skip count's
    series aside (written at the step of the read that met the bad line)."""
    run.refresh_from_db()
    points, keys, summaries = _tables(run)
    return {
        "points": [p for p in points if p[0] != SKIPPED_KEY],
        "keys": keys,
        "summaries": [s for s in summaries if s[0] != SKIPPED_KEY],
        "logs": list(RunLog.objects.filter(run=run).order_by("seq").values_list("seq", "level", "message")),
        "checkpoints": list(run.checkpoints.order_by("step").values_list("step", "path")),
        "run": (run.events_offset, run.step, run.last_loss, run.status),
    }


def test_a_long_read_stored_in_pieces_stores_what_one_read_does(run, tmp_path: Path, monkeypatch):
    """A busy file's read is parsed and stored in pieces (the next parsed while the database
    stores the one before): one call still takes it all, and leaves the rows one read would,
    system stats placed at the step before them across a piece's edge, a bad line skipped."""
    with EventWriter(tmp_path) as writer:
        writer.status("running")
        for step in range(1500):
            writer.metric(step, {"train/loss": 5.0 - step / 1000, "train/lr": 1e-3})
            writer.system({"cpu/util": step / 1500})  # placed at the step before it, a piece's edge between
            if step % 500 == 250:
                writer.log(f"at {step}")
                writer.checkpoint(step, f"ckpt-{step}")
    path = tmp_path / EVENTS_FILE
    with open(path, "ab") as f:
        f.write(b"not an event\n")
    with EventWriter(tmp_path) as writer:
        for step in range(1500, 1600):
            writer.metric(step, {"train/loss": 9.0 if step == 1555 else 1.0})
    size = path.stat().st_size

    def ingested_whole(piece_bytes: int, name: str) -> tuple[Run, list[Batch]]:
        monkeypatch.setattr(ingest, "PIECE_BYTES", piece_bytes)
        queued = Run.objects.create(
            project=run.project, name=name, config=run.config, status=RunStatus.QUEUED
        )
        claimed = transitions.claim_for_launch(queued.id, "test-worker")
        batches = []
        while (batch := ingest_new_events(claimed, path)) is not None:
            batches.append(batch)
        return claimed, batches

    whole, [one] = ingested_whole(size + 1, "one read")
    pieces, [together] = ingested_whole(4096, "pieces")  # ~40 pieces, a call still takes them all
    assert size > 40 * 4096
    assert _everything(pieces) == _everything(whole)
    assert together.stored_points == one.stored_points == 3100 + 1500  # metrics, system stats
    assert together.offset == one.offset == size and together.skipped == one.skipped == 1
    assert together.last_loss == one.last_loss == 1.0 and together.step == one.step == 1599
    assert together.running and len(together.checkpoints) == len(one.checkpoints) == 3
    assert together.live is None  # several commits: live pages read them from the database
    for claimed in (whole, pieces):
        skipped = MetricPoint.objects.filter(run=claimed, key=SKIPPED_KEY).values_list("value", flat=True)
        assert list(skipped) == [1.0]
        assert MetricPoint.objects.get(run=claimed, key="train/loss", step=1555).value == 9.0


def test_a_piece_that_is_not_ours_any_more_ends_the_read(run, tmp_path: Path, monkeypatch):
    """A run relaunched while its old supervisor reads: the piece is refused, and so the rest."""
    monkeypatch.setattr(ingest, "PIECE_BYTES", 4096)
    queued = Run.objects.create(project=run.project, name="taken", config=run.config, status=RunStatus.QUEUED)
    claimed = transitions.claim_for_launch(queued.id, "test-worker")
    with EventWriter(tmp_path) as writer:
        for step in range(2000):
            writer.metric(step, {"train/loss": 1.0})
    real_commit = ingest._commit
    commits = []

    def relaunched_after_two(run_, batch, meanwhile=None):
        commits.append(batch.offset)
        if len(commits) == 3:
            Run.objects.filter(pk=run_.id).update(attempt=run_.attempt + 1)
        return real_commit(run_, batch, meanwhile)

    monkeypatch.setattr(ingest, "_commit", relaunched_after_two)
    batch = ingest_new_events(claimed, tmp_path / EVENTS_FILE)
    assert batch.lost_ownership and len(commits) == 3
    assert claimed.events_offset == commits[1] == Run.objects.get(pk=claimed.pk).events_offset
    assert MetricPoint.objects.filter(run=claimed).count() == batch.stored_points > 0
