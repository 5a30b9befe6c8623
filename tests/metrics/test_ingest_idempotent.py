"""Through the real path (events.jsonl read by the supervisor's ingestion): reading the same
lines again, as a supervisor does after a crash, leaves the same rows and summaries."""

from __future__ import annotations

from pathlib import Path

from modelcore.events import EVENTS_FILE, EventWriter
from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from workers.ingest import ingest_new_events


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
