"""Writes for metric points: bulk, idempotent upserts on (run, key, step)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import NamedTuple

from webapp.metrics.models import MetricPoint

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
    return len(latest)
