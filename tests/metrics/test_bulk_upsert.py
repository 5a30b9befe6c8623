"""The bulk upsert (points copied in, summaries recomputed in memory) writes exactly what
the plain one (ORM upserts, summaries re-read from the table) writes."""

from __future__ import annotations

import math
import random

from django.db import connection

from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.metrics.services import LatestPoints, Point, upsert_points, upsert_points_reference, write_points
from webapp.runs.models import Run

_SUMMARY_FIELDS = ("count", "first_step", "last_step", "min_step", "min_value", "max_step", "max_value")


def _rows(run: Run) -> dict[str, list[tuple]]:
    return {
        "points": sorted(
            MetricPoint.objects.filter(run=run).values_list("key", "step", "value", "time", "seq")
        ),
        "keys": sorted(MetricKey.objects.filter(run=run).values_list("key", flat=True)),
        "summaries": sorted(
            MetricSummary.objects.filter(run=run).values_list("key", "level", "bucket", *_SUMMARY_FIELDS)
        ),
    }


def _random_batches(rng: random.Random) -> list[list[Point]]:
    """Appends, out-of-order steps, re-logged steps (across and within batches), NaN and
    inf, sparse keys far apart, ties between equal values: what ingestion meets."""
    batches: list[list[Point]] = []
    step = 0
    for _ in range(8):
        batch: list[Point] = []
        for _ in range(rng.randint(1, 300)):
            kind = rng.random()
            if kind < 0.6:  # the trainer moving on
                step += rng.randint(0, 3)
                s = step
            elif kind < 0.85:  # a resumed attempt re-logging an earlier step
                s = rng.randint(0, step)
            else:  # an eval far from the rest, or a step far ahead
                s = rng.choice([rng.randint(0, 10 * step + 10), 5_000_000 + rng.randint(0, 70_000)])
            value = rng.choice([rng.uniform(-5, 5), round(rng.uniform(0, 3)), math.nan, math.inf, None])
            batch.append(
                Point(rng.choice(["train/loss", "val/loss", "lr", "gpu/util"]), s, value, rng.random())
            )
        batches.append(batch)
    return batches


def test_the_bulk_and_the_reference_upsert_store_the_same_rows_and_summaries(run):
    twin = Run.objects.create(project=run.project, name="twin", config=run.config)
    for seed in range(3):
        for batch in _random_batches(random.Random(seed)):
            assert upsert_points(run.id, batch) == upsert_points_reference(twin.id, batch)
    ours, reference = _rows(run), _rows(twin)
    assert len(ours["points"]) > 500 and len(ours["summaries"]) > 1000  # the test did write
    for table in ("points", "keys", "summaries"):
        assert ours[table] == reference[table], table


def test_points_gathered_by_event_are_written_as_the_same_points_one_by_one(run):
    """Ingestion's ``LatestPoints`` (a step's values at a time, no Point apiece) stores what the
    points themselves store: the last per key and step, in first-seen order, keys cut to 200."""
    twin = Run.objects.create(project=run.project, name="twin", config=run.config)
    long_key = "x" * 230
    for batch in _random_batches(random.Random(4)):
        batch += [Point(long_key, 7, 1.0, 0.5), Point(long_key[:200] + "y", 7, 2.0, 0.6)]
        gathered = LatestPoints()
        for p in batch:  # the reader's values: finite floats or None
            value = p.value if p.value is not None and math.isfinite(p.value) else None
            gathered.add(p.step, {p.key: None if value is None else float(value)}, p.time)
        ours, theirs = write_points(run.id, gathered), write_points(twin.id, batch)
        assert (ours.first_seq, ours.rows) == (theirs.first_seq, theirs.rows)
        assert list(gathered) == [Point(k, s, v, t) for (k, s), (v, t) in gathered.latest.items()]
    assert _rows(run) == _rows(twin)
    assert MetricPoint.objects.get(run=run, key=long_key[:200]).value == 2.0


def test_reingesting_the_same_batches_changes_nothing_but_the_seqs(run):
    """Idempotent: the supervisor re-reads events after a crash and writes them again."""
    batches = _random_batches(random.Random(9))
    for batch in batches:
        upsert_points(run.id, batch)
    before = _rows(run)
    for batch in batches:
        upsert_points(run.id, batch)
    after = _rows(run)
    assert after["keys"] == before["keys"] and after["summaries"] == before["summaries"]

    def without_seq(rows: list[tuple]) -> list[tuple]:
        return [row[:4] for row in rows]

    assert without_seq(after["points"]) == without_seq(before["points"])
    assert min(row[4] for row in after["points"]) > max(row[4] for row in before["points"])


def test_a_batch_scattered_over_many_buckets_is_read_in_few_queries(run, django_assert_max_num_queries):
    """Steps all over a long range (a replay in random order) must not cost a query per bucket."""
    rng = random.Random(5)
    fill = [Point("loss", s, rng.random(), 0.0) for s in range(0, 30_000, 7)]
    scattered = [Point("loss", rng.randrange(30_000), rng.random(), 0.0) for _ in range(1000)]
    twin = Run.objects.create(project=run.project, name="twin", config=run.config)
    upsert_points(run.id, fill)
    upsert_points_reference(twin.id, fill)
    with django_assert_max_num_queries(20):
        upsert_points(run.id, scattered)
    upsert_points_reference(twin.id, scattered)
    assert _rows(run) == _rows(twin)


def test_the_reads_beside_a_batch_are_index_scans_bounded_by_its_range(run):
    """Not a read of the run's every row filtered down (as an OR of ranges was planned)."""
    upsert_points(run.id, [Point(k, s, 1.0, 0.0) for s in range(3000) for k in ("a", "b")])
    reads: list[tuple[str, list]] = []

    def keep_range_reads(execute, sql, params, many, context):
        if "UNION ALL" in sql or "unnest(" in sql:  # SQLite's form, PostgreSQL's
            reads.append((sql, list(params)))
        return execute(sql, params, many, context)

    with connection.execute_wrapper(keep_range_reads):
        upsert_points(run.id, [Point(k, s, 2.0, 0.0) for s in range(3000, 3100) for k in ("a", "b")])
    assert len(reads) == 2  # the points beside the batch, then the summary rows
    postgres = connection.vendor == "postgresql"
    with connection.cursor() as cursor:
        if postgres:
            cursor.execute("SET LOCAL enable_seqscan = off")  # tables this small would be read whole
        plans = []
        for sql, params in reads:
            cursor.execute(f"{'EXPLAIN' if postgres else 'EXPLAIN QUERY PLAN'} {sql}", params)
            # PostgreSQL: one index scan run once per range (a nested loop over the ranges' arrays).
            plans.append(
                (1 if postgres else sql.count("UNION ALL") + 1, [str(row[-1]) for row in cursor.fetchall()])
            )
    # Every scan is bounded by the batch's range in the index, whichever index serves it.
    for (ranges, plan), bound in zip(plans, ("step", "bucket"), strict=True):
        scans = [line for line in plan if ("Index Cond" if postgres else "SEARCH") in line]
        assert len(scans) == ranges, plan
        assert all((f"{bound} >= " if postgres else f"{bound}>?") in line for line in scans), plan
        if postgres:
            assert any("Nested Loop" in line for line in plan), plan


def test_ties_and_signed_zeros_in_one_write_keep_the_earliest_step_as_the_reference_does(run):
    """A write's own buckets (nothing stored beside them) are folded by min/max of their values:
    equal values must still give the earliest step, in steps logged in order or not."""
    twin = Run.objects.create(project=run.project, name="twin", config=run.config)
    values = [1.0, 2.0, 2.0, 1.0, 0.0, -0.0, 0.0, 3.0, 3.0, -0.0, 0.0, -1.0, -1.0, 5.0, 5.0, 5.0]
    rng = random.Random(3)
    for key, steps in (("ordered", list(range(64))), ("shuffled", rng.sample(range(64), 64))):
        batch = [Point(key, s, values[s % len(values)], 0.0) for s in steps]
        upsert_points(run.id, batch)
        upsert_points_reference(twin.id, batch)
    ours, reference = _rows(run), _rows(twin)
    assert ours["summaries"] == reference["summaries"] and len(ours["summaries"]) > 16


def test_meanwhile_runs_once_while_the_points_copy_is_still_open_on_postgresql(run):
    """Ingestion parses its next piece in ``meanwhile``: inside the COPY (the database still
    storing the rows), exactly once; SQLite has no COPY to overlap, so the caller runs it."""
    seen: list[object] = []

    def meanwhile() -> None:
        seen.append(
            connection.connection.pgconn.transaction_status if connection.vendor == "postgresql" else None
        )

    points = [Point("train/loss", step, step / 10, 0.0) for step in range(3000)]
    write_points(run.id, points, meanwhile=meanwhile)
    if connection.vendor == "postgresql":
        from psycopg.pq import TransactionStatus

        assert seen == [TransactionStatus.ACTIVE]  # a statement (the COPY) in progress
    else:
        assert seen == []
    assert MetricPoint.objects.filter(run=run).count() == 3000
    seen.clear()
    write_points(run.id, points[:10], meanwhile=meanwhile)  # every point replaces one: no COPY of new rows
    assert seen == []
