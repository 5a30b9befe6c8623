"""Per-bucket minimum and maximum of every series, kept up to date on each write.

A chart of a million-step series must not read a million rows (a scan over them takes
~0.5 s in PostgreSQL, ~2 min through MLflow's history API), nor average them (that hides
loss spikes). So every series is also summarised at ``LEVELS`` resolutions: at level L the
steps fall in buckets of ``FANOUT ** (L + 1)`` steps, and a summary row keeps the bucket's
point count and its minimum and maximum points (step and value). Level 0 is built from
the points, level L from the FANOUT rows of level L-1 under it, so a write of n points
costs about n row reads plus a few summary rows per level, however long the series is.

A chart then reads the coarsest level that still resolves its range finely enough, plus
finer rows at the two ragged ends (``cover``): a few thousand rows for any range.

Recomputing the touched buckets (rather than folding new points into the old min/max) is
what keeps this right when a resumed run re-logs steps with new values.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from django.db.models import Model

FANOUT = 8
LEVELS = 8  # the coarsest buckets span 8**8 = 16.8M steps


def bucket_width(level: int) -> int:
    return FANOUT ** (level + 1)


@dataclass(slots=True)
class Extremes:
    """What a summary row holds: the count and the min and max points of a step range."""

    count: int
    first_step: int
    last_step: int
    min_step: int | None = None  # None: every value in the range is NaN/inf (stored as null)
    min_value: float | None = None
    max_step: int | None = None
    max_value: float | None = None

    def add(self, other: Extremes) -> None:
        self.count += other.count
        self.first_step = min(self.first_step, other.first_step)
        self.last_step = max(self.last_step, other.last_step)
        if other.min_step is None:
            return
        # Ties go to the earlier step, so the answer does not depend on the order of reads.
        if self.min_step is None or (other.min_value, other.min_step) < (self.min_value, self.min_step):
            self.min_step, self.min_value = other.min_step, other.min_value
        if self.max_step is None or (other.max_value, -other.max_step) > (self.max_value, -self.max_step):
            self.max_step, self.max_value = other.max_step, other.max_value

    @classmethod
    def of_point(cls, step: int, value: float | None) -> Extremes:
        if value is None:
            return cls(1, step, step)
        return cls(1, step, step, step, value, step, value)

    def points(self) -> list[tuple[int, float | None]]:
        """The points a chart keeps from this range: min and max in step order, or one gap."""
        if self.min_step is None:
            return [(self.first_step, None)]
        if self.min_step == self.max_step:
            return [(self.min_step, self.min_value)]
        return sorted([(self.min_step, self.min_value), (self.max_step, self.max_value)])


class SummaryStore:
    """Reads and writes summaries through the given models (the app's, or a migration's)."""

    def __init__(self, point_model: type[Model], summary_model: type[Model]):
        self.points, self.summaries = point_model, summary_model

    # -- writing -------------------------------------------------------------------

    def refresh(self, run_id: int, key: str, steps: Iterable[int]) -> None:
        """Recompute every summary bucket that holds one of ``steps`` (just written)."""
        touched = sorted({s // FANOUT for s in steps})  # level-0 buckets
        for level in range(LEVELS):
            if level == 0:
                rows = self._level0(run_id, key, touched)
            else:
                rows = self._from_finer(run_id, key, level, touched)
            self._save(run_id, key, level, rows)
            touched = sorted({b // FANOUT for b in touched})  # the buckets one level up

    def _level0(self, run_id: int, key: str, buckets: list[int]) -> dict[int, Extremes]:
        out: dict[int, Extremes] = {}
        for lo, hi in _runs(buckets):
            rows = self.points.objects.filter(
                run_id=run_id, key=key, step__gte=lo * FANOUT, step__lt=(hi + 1) * FANOUT
            ).values_list("step", "value")
            for step, value in rows.iterator(chunk_size=5000):
                _merge(out, step // FANOUT, Extremes.of_point(step, value))
        return out

    def _from_finer(self, run_id: int, key: str, level: int, buckets: list[int]) -> dict[int, Extremes]:
        out: dict[int, Extremes] = {}
        for lo, hi in _runs(buckets):
            finer = self.summaries.objects.filter(
                run_id=run_id, key=key, level=level - 1, bucket__gte=lo * FANOUT, bucket__lt=(hi + 1) * FANOUT
            )
            for bucket, *fields in finer.values_list("bucket", *_FIELDS).iterator(chunk_size=5000):
                _merge(out, bucket // FANOUT, Extremes(*fields))
        return out

    def _save(self, run_id: int, key: str, level: int, rows: dict[int, Extremes]) -> None:
        if not rows:
            return
        self.summaries.objects.bulk_create(
            [
                self.summaries(
                    run_id=run_id,
                    key=key,
                    level=level,
                    bucket=bucket,
                    count=e.count,
                    first_step=e.first_step,
                    last_step=e.last_step,
                    min_step=e.min_step,
                    min_value=e.min_value,
                    max_step=e.max_step,
                    max_value=e.max_value,
                )
                for bucket, e in rows.items()
            ],
            batch_size=2000,
            update_conflicts=True,
            unique_fields=["run", "key", "level", "bucket"],
            update_fields=[
                "count",
                "first_step",
                "last_step",
                "min_step",
                "min_value",
                "max_step",
                "max_value",
            ],
        )

    # -- reading -------------------------------------------------------------------

    def cover(self, run_id: int, key: str, lo: int, hi: int, level: int) -> Iterator[Extremes]:
        """Extremes of disjoint pieces that together hold exactly the points with lo <= step <= hi.

        Whole buckets of ``level`` where they fit, finer levels for the ragged ends, single
        points below level 0. In step order.
        """
        if lo > hi:
            return
        if level < 0:
            rows = self.points.objects.filter(run_id=run_id, key=key, step__gte=lo, step__lte=hi)
            for step, value in rows.order_by("step").values_list("step", "value").iterator(chunk_size=5000):
                yield Extremes.of_point(step, value)
            return
        width = bucket_width(level)
        first = -(-lo // width)  # the first bucket that starts at or after lo
        last = (hi + 1) // width - 1  # the last bucket that ends at or before hi
        if first > last:
            yield from self.cover(run_id, key, lo, hi, level - 1)
            return
        yield from self.cover(run_id, key, lo, first * width - 1, level - 1)
        rows = self.summaries.objects.filter(
            run_id=run_id, key=key, level=level, bucket__gte=first, bucket__lte=last
        ).order_by("bucket")
        for fields in rows.values_list(*_FIELDS).iterator(chunk_size=5000):
            yield Extremes(*fields)
        yield from self.cover(run_id, key, (last + 1) * width, hi, level - 1)


# A summary row's columns in Extremes' field order.
_FIELDS = ("count", "first_step", "last_step", "min_step", "min_value", "max_step", "max_value")


def _merge(out: dict[int, Extremes], bucket: int, e: Extremes) -> None:
    if bucket in out:
        out[bucket].add(e)
    else:
        out[bucket] = e


def _runs(sorted_ints: list[int]) -> Iterator[tuple[int, int]]:
    """Maximal runs of consecutive integers, as (first, last): one range query each."""
    start = prev = None
    for n in sorted_ints:
        if start is None:
            start = prev = n
        elif n == prev + 1:
            prev = n
        else:
            yield start, prev
            start = prev = n
    if start is not None:
        yield start, prev
