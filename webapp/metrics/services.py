"""Writes for metric points: bulk, idempotent upserts on (run, key, step).

Every write of points goes through here: it also records the run's keys and refreshes the
series' min/max summaries (metrics.summaries) that long-range chart reads rely on.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.metrics.summaries import SummaryStore

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
    """
    latest: dict[tuple[str, int], MetricPoint] = {}
    for p in points:
        value = None if p.value is None or not math.isfinite(p.value) else float(p.value)
        latest[(p.key, int(p.step))] = MetricPoint(
            run_id=run_id, key=p.key[:200], step=int(p.step), value=value, time=float(p.time)
        )
    if latest:
        MetricPoint.objects.bulk_create(
            list(latest.values()),
            batch_size=BATCH_SIZE,
            update_conflicts=True,
            unique_fields=["run", "key", "step"],
            update_fields=["value", "time"],
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
