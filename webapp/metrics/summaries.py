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
what keeps this right when a resumed run re-logs steps with new values. ``recompute`` does
it from the batch in memory, reading only the stored rows beside it (the other points of
a touched level-0 bucket, the untouched neighbours at each coarser level): a few rows for
an append, where ``refresh`` reads every written point back. ``refresh`` stays as the
plain reference (tests compare the two) and for the migration that builds summaries.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import connection
from django.db.models import Model

from webapp.metrics.bulk import insert_rows, upsert_rows

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

    @classmethod
    def of_points(cls, members: list[tuple[int, float | None]]) -> Extremes:
        """The extremes of (step, value) pairs at distinct steps, without a merge per point."""
        steps = [s for s, _ in members]
        out = cls(len(members), min(steps), max(steps))
        finite = [(v, s) for s, v in members if v is not None]
        if finite:
            out.min_value, out.min_step = min(finite)  # the earliest step on ties
            out.max_value, out.max_step = max(finite, key=lambda vs: (vs[0], -vs[1]))
        return out

    @classmethod
    def of_parts(cls, parts: list[Extremes]) -> Extremes:
        """The extremes of disjoint step ranges together (``parts`` are left unchanged)."""
        # ``add`` over the parts, in one loop of locals (a coarser level of a big write is
        # thousands of these).
        count, first, last = 0, parts[0].first_step, parts[0].last_step
        low = high = None
        low_step = low_value = high_step = high_value = 0
        for part in parts:
            count += part.count
            if part.first_step < first:
                first = part.first_step
            if part.last_step > last:
                last = part.last_step
            step = part.min_step
            if step is None:
                continue
            # Ties go to the earlier step, as in ``add``.
            value = part.min_value
            if low is None or value < low_value or (value == low_value and step < low_step):
                low, low_step, low_value = part, step, value
            step, value = part.max_step, part.max_value
            if high is None or value > high_value or (value == high_value and step < high_step):
                high, high_step, high_value = part, step, value
        if low is None:
            return cls(count, first, last)
        return cls(count, first, last, low_step, low_value, high_step, high_value)

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

    def stored_beside(
        self, run_id: int, written: Mapping[str, Mapping[int, float | None]]
    ) -> dict[str, dict[int, float | None]]:
        """The stored points of every level-0 bucket holding a step of ``written`` (maybe more).

        Read before ``written`` is stored: for an append, the few points of its first
        bucket that an earlier batch wrote. They also tell the caller which of its
        points replace a stored one.
        """
        ranges = [
            ((key,), lo * FANOUT, (hi + 1) * FANOUT)
            for key, values in written.items()
            for lo, hi in _spans(sorted({s // FANOUT for s in values}))
        ]
        out: dict[str, dict[int, float | None]] = {}
        for key, step, value in _rows_in_ranges(self.points, run_id, ("key",), "step", ("value",), ranges):
            out.setdefault(key, {})[step] = value
        return out

    def rows_beside(self, run_id: int, written: Mapping[str, Mapping[int, float | None]]) -> RowsBeside:
        """The stored summary rows that recomputing ``written``'s buckets needs: read them
        before ``recompute``, which is then all in memory (ingestion runs it while the
        database stores the points)."""
        touched = {
            key: _touched_above(sorted({s // FANOUT for s in values})) for key, values in written.items()
        }
        return RowsBeside(touched, self._stored_rows(run_id, touched))

    def recompute(
        self,
        run_id: int,
        written: Mapping[str, Mapping[int, float | None]],
        stored: Mapping[str, Mapping[int, float | None]],
        beside: RowsBeside | None = None,
    ) -> SummaryRows:
        """The summary rows of every bucket holding a step of ``written``, computed in memory.

        ``written`` is step -> value per key (None for NaN/inf) about to be stored, ``stored``
        what ``stored_beside`` read and ``beside`` what ``rows_beside`` read (read here when not
        given); call it in the transaction that stores them. A stored point at a written step
        is the value being replaced and is left out.
        """
        if beside is None:
            beside = self.rows_beside(run_id, written)
        touched, rows = beside.touched, beside.rows
        out = SummaryRows([], [])
        for key, values in written.items():
            new = _fold_points(values, stored.get(key, {}))
            levels = touched[key]
            for level in range(LEVELS):
                if level:
                    new = _coarser(new, rows.get((key, level - 1), {}), levels[level])
                known = rows.get((key, level), {})
                for bucket, e in new.items():
                    (out.changed if bucket in known else out.new).append((key, level, bucket, e))
        return out

    def save(self, run_id: int, rows: SummaryRows) -> None:
        """Write what ``recompute`` returned (after the points, in the same transaction)."""
        fields = ("run", "key", "level", "bucket", *_FIELDS)
        insert_rows(self.summaries, fields, _as_tuples(run_id, rows.new))
        upsert_rows(
            self.summaries,
            fields,
            _as_tuples(run_id, rows.changed),
            unique=("run", "key", "level", "bucket"),
            update=_FIELDS,
        )

    def _stored_rows(
        self, run_id: int, touched: dict[str, list[list[int]]]
    ) -> dict[tuple[str, int], dict[int, Extremes]]:
        """Per (key, level): the stored rows under a touched bucket one level up, and the
        touched rows of the top level.

        The touched ones are recomputed from memory (their being stored says whether to
        insert or update them); the others are neighbours that the batch leaves as they
        are but a coarser bucket still spans.
        """
        ranges = [
            ((key, level - 1), lo * FANOUT, (hi + 1) * FANOUT)
            for key, levels in touched.items()
            for level in range(1, LEVELS)
            for lo, hi in _spans(levels[level])
        ]
        ranges += [
            ((key, LEVELS - 1), lo, hi + 1)
            for key, levels in touched.items()
            for lo, hi in _spans(levels[-1])
        ]
        out: dict[tuple[str, int], dict[int, Extremes]] = {}
        for key, level, bucket, *fields in _rows_in_ranges(
            self.summaries, run_id, ("key", "level"), "bucket", _FIELDS, ranges
        ):
            out.setdefault((key, level), {})[bucket] = Extremes(*fields)
        return out

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


@dataclass(slots=True)
class RowsBeside:
    """What ``SummaryStore.rows_beside`` read: per key the touched buckets of each level, and
    per (key, level) the stored rows ``recompute`` combines with the new ones."""

    touched: dict[str, list[list[int]]]
    rows: dict[tuple[str, int], dict[int, Extremes]]


@dataclass(slots=True)
class SummaryRows:
    """Recomputed summary rows, (key, level, bucket, extremes): those to add and those to replace."""

    new: list[tuple[str, int, int, Extremes]]
    changed: list[tuple[str, int, int, Extremes]]


def _coarser(
    finer: dict[int, Extremes], stored: dict[int, Extremes], buckets: list[int]
) -> dict[int, Extremes]:
    """The rows of ``buckets`` one level up from ``finer`` (recomputed) and ``stored`` (the rest)."""
    out: dict[int, Extremes] = {}
    for bucket in buckets:
        children = range(bucket * FANOUT, (bucket + 1) * FANOUT)
        parts = [finer[c] if c in finer else stored[c] for c in children if c in finer or c in stored]
        out[bucket] = Extremes.of_parts(parts)
    return out


def _as_tuples(run_id: int, rows: list[tuple[str, int, int, Extremes]]) -> list[tuple[object, ...]]:
    return [
        (run_id, key, level, bucket, e.count, e.first_step, e.last_step, e.min_step, e.min_value)
        + (e.max_step, e.max_value)
        for key, level, bucket, e in rows
    ]


def _fold_points(
    values: Mapping[int, float | None], stored: Mapping[int, float | None]
) -> dict[int, Extremes]:
    """The level-0 rows of the buckets holding a step of ``values`` (step -> value about to be
    stored), with the ``stored`` points of those buckets that ``values`` does not replace.

    A bucket at a time over the sorted steps, its extremes by ``min``/``max`` of its values:
    the fold per point it replaced was most of the summaries' time. Buckets ascend.
    """
    steps = list(values)
    ordered = sorted(steps)  # an append comes sorted: one pass
    if ordered == steps:
        all_values = list(values.values())
    else:
        steps, all_values = ordered, [values[s] for s in ordered]
    gaps = None in all_values  # NaN/inf: the general case, for their buckets
    beside: dict[int, list[tuple[int, float | None]]] = {}
    for step, value in stored.items():
        if step not in values:
            beside.setdefault(step // FANOUT, []).append((step, value))
    out: dict[int, Extremes] = {}
    start, end = 0, len(steps)
    while start < end:
        bucket = steps[start] // FANOUT
        stop = bisect_left(steps, (bucket + 1) * FANOUT, start, end)
        chunk, members = steps[start:stop], all_values[start:stop]
        if bucket in beside or (gaps and None in members):
            out[bucket] = Extremes.of_points([*zip(chunk, members, strict=True), *beside.get(bucket, ())])
        else:
            # Equal values: the first, at the earliest step, as of_points picks them.
            low, high = min(members), max(members)
            low_step, high_step = chunk[members.index(low)], chunk[members.index(high)]
            out[bucket] = Extremes(stop - start, chunk[0], chunk[-1], low_step, low, high_step, high)
        start = stop
    return out


def _touched_above(buckets: list[int]) -> list[list[int]]:
    """Per level, the sorted buckets over the sorted level-0 ``buckets``."""
    levels = [buckets]
    for _ in range(1, LEVELS):
        buckets = sorted({b // FANOUT for b in buckets})
        levels.append(buckets)
    return levels


# Few ranges per query: SQLite takes at most 500 SELECTs in one compound statement.
_MAX_SPANS = 8
_GROUP = 64


def _spans(sorted_ints: list[int]) -> list[tuple[int, int]]:
    """Ranges covering ``sorted_ints`` (and maybe more): its runs, joined across the smallest
    gaps until at most ``_MAX_SPANS`` are left. Reading a few extra rows is cheaper than a
    query per scattered bucket; callers ignore what they did not ask for."""
    runs = list(_runs(sorted_ints))
    if len(runs) <= _MAX_SPANS:
        return runs
    widest = sorted(range(len(runs) - 1), key=lambda j: runs[j + 1][0] - runs[j][1])[-(_MAX_SPANS - 1) :]
    spans, start = [], 0
    for j in sorted(widest):  # a span ends before each of the widest gaps
        spans.append((runs[start][0], runs[j][1]))
        start = j + 1
    spans.append((runs[start][0], runs[-1][1]))
    return spans


def _rows_in_ranges(
    model: type[Model],
    run_id: int,
    match: tuple[str, ...],
    ordered: str,
    rest: tuple[str, ...],
    ranges: list[tuple[tuple[object, ...], int, int]],
) -> Iterator[tuple[Any, ...]]:
    """Rows (``match``, ``ordered``, ``rest`` columns) of the run that equal one range's ``match``
    values with ``lo <= ordered < hi``.

    Each range is one range scan on the unique index (run, match..., ordered). Given an
    ``OR`` of the ranges, PostgreSQL read every row of the run through the run's index and
    filtered them (17 ms at 40k points, growing with the run). On PostgreSQL the ranges
    are arrays joined to the table (``unnest``): one statement of fixed text whatever their
    number, which a ``UNION ALL`` of one ``SELECT`` per range was not (its planning and the
    driver's parsing of a new text each time were most of the read's 4-8 ms a batch).
    SQLite has no arrays: a ``UNION ALL`` there, ``_GROUP`` ranges a query. Plain SQL, too:
    building the same ranges as Django ``Q`` objects took longer than running them.
    """
    if not ranges:
        return
    quote = connection.ops.quote_name
    meta = model._meta
    column = {name: quote(meta.get_field(name).column) for name in (*match, ordered, *rest, "run")}
    table = quote(meta.db_table)
    select = ", ".join(f"t.{column[name]}" for name in (*match, ordered, *rest))
    if connection.vendor == "postgresql":
        names = [f"m{i}" for i in range(len(match))]
        arrays = ", ".join(
            f"%s::{meta.get_field(name).db_type(connection)}[]" for name in (*match, ordered, ordered)
        )
        where = [f"t.{column['run']} = %s"]
        where += [f"t.{column[m]} = r.{n}" for m, n in zip(match, names, strict=True)]
        where += [f"t.{column[ordered]} >= r.lo", f"t.{column[ordered]} < r.hi"]
        # A range scan per range: a LATERAL subquery kept whole (OFFSET 0). As a join,
        # PostgreSQL hashed the run's every row instead (young tables' statistics make that
        # look cheap, and its cost grows with the run).
        sql = (
            f"SELECT {select} FROM unnest({arrays}) AS r({', '.join(names)}, lo, hi) "
            f"CROSS JOIN LATERAL (SELECT * FROM {table} t WHERE {' AND '.join(where)} OFFSET 0) AS t"
        )
        params: list[object] = [[values[i] for values, _, _ in ranges] for i in range(len(match))]
        params += [[lo for _, lo, _ in ranges], [hi for _, _, hi in ranges], run_id]
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            yield from cursor.fetchall()
        return
    conditions = [f"t.{column[m]} = %s" for m in ("run", *match)]
    conditions += [f"t.{column[ordered]} >= %s", f"t.{column[ordered]} < %s"]
    one = f"SELECT {select} FROM {table} t WHERE {' AND '.join(conditions)}"
    for i in range(0, len(ranges), _GROUP):
        group = ranges[i : i + _GROUP]
        params = []
        for values, lo, hi in group:
            params += [run_id, *values, lo, hi]
        with connection.cursor() as cursor:
            cursor.execute(" UNION ALL ".join([one] * len(group)), params)
            yield from cursor.fetchall()


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
