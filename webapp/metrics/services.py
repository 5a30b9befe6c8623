"""Writes for metric points: bulk, idempotent upserts on (run, key, step).

Every write of points goes through here: it also records the run's keys, refreshes the
series' min/max summaries (metrics.summaries) that long-range chart reads rely on, and
numbers the rows it writes (``MetricPoint.seq``) in the run's order of writes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import F, Max

from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.metrics.summaries import SummaryStore
from webapp.runs.models import Run

BATCH_SIZE = 2000


class Point(NamedTuple):
    key: str
    step: int
    value: float | None  # None: the trainer logged NaN/inf
    time: float


def upsert_points(run_id: int, points: Iterable[Point]) -> int:
    """Insert or replace points; returns how many distinct (key, step) rows were written.

    Within one call the last point for a (key, step) wins, as it would across
    calls: a resumed attempt re-logging a step replaces the old value. (PostgreSQL
    also refuses to touch one row twice in a single ``ON CONFLICT`` statement.)
    Each row written, new or replaced, gets the next ``seq`` of the run.
    """
    latest: dict[tuple[str, int], MetricPoint] = {}
    for p in points:
        value = None if p.value is None or not math.isfinite(p.value) else float(p.value)
        latest[(p.key, int(p.step))] = MetricPoint(
            run_id=run_id, key=p.key[:200], step=int(p.step), value=value, time=float(p.time)
        )
    if not latest:
        return 0
    with transaction.atomic():
        first = _next_seq(run_id)
        for i, point in enumerate(latest.values()):
            point.seq = first + i
        MetricPoint.objects.bulk_create(
            list(latest.values()),
            batch_size=BATCH_SIZE,
            update_conflicts=True,
            unique_fields=["run", "key", "step"],
            update_fields=["value", "time", "seq"],
        )
        steps_by_key: dict[str, list[int]] = {}
        for key, step in latest:
            steps_by_key.setdefault(key[:200], []).append(step)
        MetricKey.objects.bulk_create(
            [MetricKey(run_id=run_id, key=key) for key in steps_by_key], ignore_conflicts=True
        )
        store = SummaryStore(MetricPoint, MetricSummary)
        for key, steps in steps_by_key.items():
            store.refresh(run_id, key, steps)
    return len(latest)


def _next_seq(run_id: int) -> int:
    """The run's next free ``seq``, with the run's other point writers held off until we commit.

    Writers of one run (its supervisor, a periodic eval's results) take turns, so seqs
    become visible in the order they are handed out, and a reader that has seen seq N
    has seen every seq below it: a stream following ``seq`` skips nothing.
    """
    if connection.features.has_select_for_update:
        list(Run.objects.select_for_update().filter(pk=run_id).values_list("pk", flat=True))
    else:
        # SQLite has no row locks; writing takes its database-wide write lock now, before
        # the read below (a no-op write: the run's id set to itself).
        Run.objects.filter(pk=run_id).update(id=F("id"))
    highest = MetricPoint.objects.filter(run_id=run_id).aggregate(highest=Max("seq"))["highest"]
    return (highest or 0) + 1
