"""Reads of metric points, shaped for charts.

A chart never needs more points than it has pixels, but it must not hide a
loss spike: long series are downsampled by keeping the minimum and the maximum
of each bucket (never an average), and a zoom asks again for the finer range.
A long range is read from the min/max summaries (metrics.summaries), never row by
row, so a chart of a million-step series costs a few thousand rows.
Callers pass a run they already checked the user may see (runs selectors).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from django.db.models import Max

from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.metrics.summaries import LEVELS, SummaryStore, bucket_width
from webapp.runs.models import Run

DEFAULT_MAX_POINTS = 2000
# A downsampled chart reads summary rows at most 1/PIECES_PER_BUCKET as wide as one of its own
# buckets, so each of its buckets is made of several pieces and its min and max are (nearly)
# the true ones; the coarsest level that fine keeps the read to a few thousand rows.
PIECES_PER_BUCKET = 2


def keys_for_run(run: Run) -> list[str]:
    """Every metric key the run has logged, sorted."""
    return list(MetricKey.objects.filter(run=run).order_by("key").values_list("key", flat=True))


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
    first = qs.order_by("step").values_list("step", flat=True).first()
    if first is None:
        return {"key": key, "steps": [], "values": []}
    last = qs.order_by("-step").values_list("step", flat=True).first()
    if max_points == 1:
        # No room for a bucket's two extremes: the latest point is what a single value means.
        return {"key": key, "steps": [last], "values": [qs.get(step=last).value]}
    if last - first < max_points:  # steps are unique, so this range has at most max_points points
        return _whole(key, qs)
    # The coarsest level whose buckets are still several to one chart bucket.
    chart_bucket = (last - first + 1) / (max_points // 2)
    level = -1
    while level + 1 < LEVELS and bucket_width(level + 1) * PIECES_PER_BUCKET <= chart_bucket:
        level += 1
    if level < 0:  # too short a range for summaries to save anything: read the points
        steps, values = _whole_lists(qs)
        steps, values = downsample_minmax(steps, values, max_points)
        return {"key": key, "steps": steps, "values": values}
    pieces = list(SummaryStore(MetricPoint, MetricSummary).cover(run.id, key, first, last, level))
    if sum(p.count for p in pieces) <= max_points:
        return _whole(key, qs)  # a sparse series: all its points fit
    steps, values = [], []
    for piece in pieces:
        for step, value in piece.points():
            steps.append(step)
            values.append(value)
    steps, values = downsample_minmax(steps, values, max_points)
    return {"key": key, "steps": steps, "values": values}


def _whole(key: str, qs: Any) -> dict[str, Any]:
    steps, values = _whole_lists(qs)
    return {"key": key, "steps": steps, "values": values}


def _whole_lists(qs: Any) -> tuple[list[int], list[float | None]]:
    steps: list[int] = []
    values: list[float | None] = []
    for step, value in qs.order_by("step").values_list("step", "value").iterator(chunk_size=20_000):
        steps.append(step)
        values.append(value)
    return steps, values


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


def latest_point_seq(run: Run) -> int:
    """The ``seq`` of the run's last written point: where a live stream picks up after a chart read.

    Read it before the series: a point written in between then comes again over the
    stream (the page merges points by step) rather than not at all. -1: no points yet.
    """
    return MetricPoint.objects.filter(run=run).aggregate(last=Max("seq"))["last"] or -1


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


def point_times(run: Run, key: str, steps: Sequence[int]) -> list[float | None]:
    """The unix times of ``key``'s points at ``steps`` (a chart's x axis by wall time), in order.

    A step with no point (a downsampled series only keeps steps it has) reads as None.
    """
    found: dict[int, float] = {}
    unique = sorted(set(steps))
    for lo in range(0, len(unique), 5_000):  # bounded IN lists (SQLite's variable limit)
        chunk = unique[lo : lo + 5_000]
        rows = MetricPoint.objects.filter(run=run, key=key, step__in=chunk).values_list("step", "time")
        found.update(rows)
    return [found.get(step) for step in steps]


def latest_values(run: Run, keys: Iterable[str]) -> dict[str, float | None]:
    """The value at the highest step of each of ``keys`` the run has logged (a header's figures)."""
    out: dict[str, float | None] = {}
    for key in keys:
        row = MetricPoint.objects.filter(run=run, key=key).order_by("-step").values_list("value", flat=True)
        values = list(row[:1])
        if values:
            out[key] = values[0]
    return out


def raw_points(
    run: Run, key: str, *, since_step: int | None = None, until_step: int | None = None
) -> Iterator[tuple[int, float | None, float]]:
    """Every stored ``(step, value, time)`` of ``key`` in the window, steps ascending, streamed."""
    qs = MetricPoint.objects.filter(run=run, key=key)
    if since_step is not None:
        qs = qs.filter(step__gt=since_step)
    if until_step is not None:
        qs = qs.filter(step__lte=until_step)
    yield from qs.order_by("step").values_list("step", "value", "time").iterator(chunk_size=20_000)
