"""Writes for metric points: bulk, idempotent upserts on (run, key, step).

Every write of points goes through here: it also records the run's keys, refreshes the
series' min/max summaries (metrics.summaries) that long-range chart reads rely on, and
numbers the rows it writes (``MetricPoint.seq``) in the run's order of writes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from django.db import connection, transaction
from django.db.models import F, Max

from webapp.alerts.services import check_points
from webapp.metrics.bulk import insert_rows, upsert_rows
from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.metrics.summaries import LEVELS, SummaryRows, SummaryStore
from webapp.runs.models import Run

BATCH_SIZE = 2000
KEY_LENGTH = 200  # MetricPoint.key's max_length: longer keys are cut, as the database would

# (key, step) -> (value, time): one write's points, the last per stored key and step, in
# first-seen order (the order their seqs are handed out in).
Latest = dict[tuple[str, int], tuple[float | None, float]]


class Point(NamedTuple):
    key: str
    step: int
    value: float | None  # None: the trainer logged NaN/inf
    time: float


class LatestPoints:
    """Points gathered for one ``write_points`` without a ``Point`` apiece (ingestion's batches).

    Kept as ``write_points`` keys them (the last point per key and step wins, in first-seen
    order, keys cut to the column), so the write skips that pass: at 100k points a read,
    a Point per point and the pass over them cost as much as parsing the lines. Iterating
    gives a ``Point`` each, so it goes wherever points do.
    """

    __slots__ = ("latest",)

    def __init__(self, latest: Latest | None = None):
        self.latest: Latest = {} if latest is None else latest

    def add(self, step: int, values: Mapping[str, float | None], time: float) -> None:
        """The points of one event: ``values`` maps keys to finite floats or None (NaN/inf), as
        ``modelcore.events.check_event`` leaves a metric event's values."""
        latest = self.latest
        for key, value in values.items():
            latest[key[:KEY_LENGTH], step] = (value, time)

    def __add__(self, later: LatestPoints) -> LatestPoints:
        return LatestPoints({**self.latest, **later.latest})

    def __len__(self) -> int:
        return len(self.latest)

    def __iter__(self) -> Iterator[Point]:
        for (key, step), (value, time) in self.latest.items():
            yield Point(key, step, value, time)


@dataclass(frozen=True)
class WrittenPoints:
    """The rows one write stored, as stored: ``rows[i]`` is ``(key, step, value)`` with seq ``first_seq + i``.

    What live pages get is built from these (``webapp.live.rows_written``): reading the
    same rows back from the table cost a fifth of an ingested batch's time. Held as the
    writes' own mappings and listed only when asked: a big batch goes to live pages
    without its points, so its rows are never listed.
    """

    first_seq: int
    parts: tuple[Latest, ...] = ()  # per write of the transaction, in order

    @property
    def count(self) -> int:
        return sum(len(part) for part in self.parts)

    @property
    def rows(self) -> list[tuple[str, int, float | None]]:
        return [(key, step, value) for part in self.parts for (key, step), (value, _) in part.items()]

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1

    def then(self, later: WrittenPoints) -> WrittenPoints:
        """This write and ``later``, the next one of the same transaction (its seqs follow ours)."""
        if not self.count:
            return later
        if not later.count:
            return self
        assert later.first_seq == self.last_seq + 1, "writes of one transaction hold consecutive seqs"
        return WrittenPoints(self.first_seq, self.parts + later.parts)


def upsert_points(run_id: int, points: Iterable[Point]) -> int:
    """Insert or replace points; returns how many distinct (key, step) rows were written (see ``write_points``)."""
    return len(write_points(run_id, points).rows)


def write_points(
    run_id: int,
    points: Iterable[Point],
    *,
    run_locked: bool = False,
    meanwhile: Callable[[], None] | None = None,
) -> WrittenPoints:
    """Insert or replace points; returns the distinct (key, step) rows written, with their seqs.

    Within one call the last point for a (key, step) wins, as it would across
    calls: a resumed attempt re-logging a step replaces the old value. (PostgreSQL
    also refuses to touch one row twice in a single ``ON CONFLICT`` statement.)
    Each row written, new or replaced, gets the next ``seq`` of the run.

    The bulk path: the points stored beside the batch are read first (under the run's
    lock), which says which rows are new (copied straight in) and which replace a stored
    one (upserted), and lets the summaries be recomputed from the batch in memory
    (``SummaryStore.recompute``) instead of re-read from the table (metrics.bulk).
    ``upsert_points_reference`` is the plain version that tests hold it to.

    ``run_locked``: the caller's transaction already holds the run's row (ingestion
    updates the run's event offset first, which locks it), so the lock is not taken again.
    Inside a caller's transaction no savepoint is made either: an error here leaves that
    transaction to be rolled back whole, which is what every caller does with one.

    ``meanwhile`` is called at most once, while the database stores the new points (on
    PostgreSQL, once their COPY is sent): ingestion parses its next piece of events there.
    It must not raise. Not called (no new points, SQLite), it is the caller's to call.
    """
    latest = points.latest if isinstance(points, LatestPoints) else _latest(points)
    if not latest:
        return WrittenPoints(0)
    written: dict[str, dict[int, float | None]] = {}
    for (key, step), (value, _) in latest.items():
        values = written.get(key)
        if values is None:
            values = written[key] = {}
        values[step] = value
    store = SummaryStore(MetricPoint, MetricSummary)
    with transaction.atomic(savepoint=False):
        first = _next_seq(run_id, lock=not run_locked)  # from here on, no other writer of the run adds rows
        stored = store.stored_beside(run_id, written)
        beside = store.rows_beside(run_id, written)
        rows = [
            (run_id, key, step, value, t, seq)
            for seq, ((key, step), (value, t)) in enumerate(latest.items(), first)
        ]
        # Rows that replace a stored point are upserted, the rest copied in: an append has none.
        again = {(key, step) for key, steps in stored.items() for step in steps if step in written[key]}
        new, replaced = rows, []
        if again:
            new = [row for row in rows if (row[1], row[2]) not in again]
            replaced = [row for row in rows if (row[1], row[2]) in again]
        fields = ("run", "key", "step", "value", "time", "seq")
        recomputed: list[SummaryRows] = []

        def while_copying() -> None:
            # In memory only (what it reads was read above): overlaps the database's COPY.
            recomputed.append(store.recompute(run_id, written, stored, beside))
            if meanwhile is not None:
                meanwhile()

        if not insert_rows(MetricPoint, fields, new, while_copying):
            recomputed.append(store.recompute(run_id, written, stored, beside))
        [summaries] = recomputed
        upsert_rows(
            MetricPoint, fields, replaced, unique=("run", "key", "step"), update=("value", "time", "seq")
        )
        # A key with a stored top-level summary row has its key row (both are written together):
        # an append to known series costs no statement for its keys.
        known = {key for key, level, _, _ in summaries.changed if level == LEVELS - 1}
        keys = [(run_id, key) for key in written if key not in known]
        upsert_rows(MetricKey, ("run", "key"), keys, unique=("run", "key"))
        store.save(run_id, summaries)
        check_points(run_id, written)  # alert rules on metrics (NaN, bounds) see every stored point
    return WrittenPoints(first, (latest,))


def upsert_points_reference(run_id: int, points: Iterable[Point]) -> int:
    """``upsert_points`` written plainly: the ORM's upserts, then every touched summary bucket
    re-read from the stored points. Same rows, same seqs, same summaries; about 6x slower."""
    latest = _latest(points)
    if not latest:
        return 0
    with transaction.atomic():
        first = _next_seq(run_id)
        MetricPoint.objects.bulk_create(
            [
                MetricPoint(run_id=run_id, key=key, step=step, value=value, time=t, seq=first + i)
                for i, ((key, step), (value, t)) in enumerate(latest.items())
            ],
            batch_size=BATCH_SIZE,
            update_conflicts=True,
            unique_fields=["run", "key", "step"],
            update_fields=["value", "time", "seq"],
        )
        steps_by_key: dict[str, list[int]] = {}
        for key, step in latest:
            steps_by_key.setdefault(key, []).append(step)
        MetricKey.objects.bulk_create(
            [MetricKey(run_id=run_id, key=key) for key in steps_by_key], ignore_conflicts=True
        )
        store = SummaryStore(MetricPoint, MetricSummary)
        for key, steps in steps_by_key.items():
            store.refresh(run_id, key, steps)
    return len(latest)


def _latest(points: Iterable[Point]) -> Latest:
    """(key, step) -> (value, time) of the last point per stored key and step, in first-seen order.

    Keys are cut to the column's 200 characters first, so two keys that differ only past
    that are one row, as the database would have them."""
    latest: Latest = {}
    for p in points:
        value = None if p.value is None or not math.isfinite(p.value) else float(p.value)
        latest[(p.key[:KEY_LENGTH], int(p.step))] = (value, float(p.time))
    return latest


def _next_seq(run_id: int, *, lock: bool = True) -> int:
    """The run's next free ``seq``, with the run's other point writers held off until we commit.

    Writers of one run (its supervisor, a periodic eval's results) take turns, so seqs
    become visible in the order they are handed out, and a reader that has seen seq N
    has seen every seq below it: a stream following ``seq`` skips nothing. Without
    ``lock`` the caller's transaction holds the run's row already.
    """
    if lock:
        _lock_run(run_id)
    highest = MetricPoint.objects.filter(run_id=run_id).aggregate(highest=Max("seq"))["highest"]
    return (highest or 0) + 1


def _lock_run(run_id: int) -> None:
    if connection.features.has_select_for_update:
        list(Run.objects.select_for_update().filter(pk=run_id).values_list("pk", flat=True))
    else:
        # SQLite has no row locks; writing takes its database-wide write lock now, before
        # the read below (a no-op write: the run's id set to itself).
        Run.objects.filter(pk=run_id).update(id=F("id"))
