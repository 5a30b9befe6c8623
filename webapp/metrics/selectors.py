"""Reads of metric points, shaped for charts.

A chart never needs more points than it has pixels, but it must not hide a
loss spike: long series are downsampled by keeping the minimum and the maximum
of each bucket (never an average), and a zoom asks again for the finer range.
Callers pass a run they already checked the user may see (runs selectors).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from webapp.metrics.models import MetricPoint
from webapp.runs.models import Run

DEFAULT_MAX_POINTS = 2000


def keys_for_run(run: Run) -> list[str]:
    """Every metric key the run has logged, sorted."""
    return list(MetricPoint.objects.filter(run=run).values_list("key", flat=True).distinct().order_by("key"))


def series(
    run: Run,
    key: str,
    *,
    since_step: int | None = None,
    until_step: int | None = None,
    max_points: int = DEFAULT_MAX_POINTS,
) -> dict[str, Any]:
    """One metric as ``{"key", "steps", "values"}``, steps ascending, at most ``max_points`` long.

    ``since_step`` is exclusive (what a live chart already has), ``until_step`` inclusive.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    qs = MetricPoint.objects.filter(run=run, key=key)
    if since_step is not None:
        qs = qs.filter(step__gt=since_step)
    if until_step is not None:
        qs = qs.filter(step__lte=until_step)
    rows = qs.order_by("step").values_list("step", "value")
    steps: list[int] = []
    values: list[float | None] = []
    for step, value in rows.iterator(chunk_size=20_000):
        steps.append(step)
        values.append(value)
    steps, values = downsample_minmax(steps, values, max_points)
    return {"key": key, "steps": steps, "values": values}


def downsample_minmax(
    steps: Sequence[int], values: Sequence[float | None], max_points: int
) -> tuple[list[int], list[float | None]]:
    """Keep each bucket's minimum and maximum point (in step order) so spikes survive.

    Buckets hold equal numbers of points, ``max_points // 2`` of them, so the
    result is never longer than ``max_points``. A bucket of only NaN/inf
    (stored as None) keeps one None point so the chart shows the gap.
    """
    n = len(steps)
    if n <= max_points:
        return list(steps), list(values)
    if max_points == 1:
        # No room for a bucket's two extremes: the latest point is what a single value means.
        return [steps[-1]], [values[-1]]
    buckets = max_points // 2
    out_steps: list[int] = []
    out_values: list[float | None] = []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        kept = _min_max_indices(range(lo, hi), values)
        if not kept:
            kept = [lo]
        for i in kept:
            out_steps.append(steps[i])
            out_values.append(values[i])
    return out_steps, out_values


def _min_max_indices(indices: Iterable[int], values: Sequence[float | None]) -> list[int]:
    i_min = i_max = None
    for i in indices:
        v = values[i]
        if v is None:
            continue
        if i_min is None or v < values[i_min]:
            i_min = i
        if i_max is None or v > values[i_max]:
            i_max = i
    if i_min is None:
        return []
    return sorted({i_min, i_max})


def latest_points(
    run: Run, since_step: int | None = None, *, keys: Iterable[str] | None = None, limit: int = 10_000
) -> dict[str, list[list[float | None]]]:
    """Points after ``since_step`` (exclusive) as ``{key: [[step, value], ...]}``, for live polling.

    The same shape as the ``points`` of a live message, so a page handles both alike.
    ``limit`` bounds one answer; a client that got a full answer asks again from its last step.
    """
    qs = MetricPoint.objects.filter(run=run)
    if since_step is not None:
        qs = qs.filter(step__gt=since_step)
    if keys is not None:
        qs = qs.filter(key__in=list(keys))
    out: dict[str, list[list[float | None]]] = {}
    for key, step, value in qs.order_by("step", "key").values_list("key", "step", "value")[:limit]:
        out.setdefault(key, []).append([step, value])
    return out
