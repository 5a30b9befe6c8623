"""Min/max summaries: exact against a brute-force scan, kept right on re-logging, and
what lets a chart of a long series read a few thousand rows instead of all of them."""

from __future__ import annotations

import itertools
import random

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.metrics.selectors import keys_for_run, series
from webapp.metrics.services import Point, upsert_points
from webapp.metrics.summaries import FANOUT, LEVELS, SummaryStore, bucket_width


def _stored(run, key: str) -> dict[int, float | None]:
    return dict(MetricPoint.objects.filter(run=run, key=key).values_list("step", "value"))


def _check_summaries_against_points(run, key: str) -> None:
    points = _stored(run, key)
    for level in range(3):  # the levels a 5000-step series fills with more than one bucket
        width = bucket_width(level)
        expected: dict[int, list[tuple[int, float | None]]] = {}
        for step, value in points.items():
            expected.setdefault(step // width, []).append((step, value))
        rows = {r.bucket: r for r in MetricSummary.objects.filter(run=run, key=key, level=level)}
        assert set(rows) == set(expected), f"level {level}: buckets differ"
        for bucket, members in expected.items():
            row = rows[bucket]
            finite = [(v, s) for s, v in members if v is not None]
            assert row.count == len(members)
            assert (row.first_step, row.last_step) == (min(members)[0], max(members)[0])
            if not finite:
                assert row.min_step is None and row.max_step is None
                continue
            low = min(finite)  # smallest value, earliest step on ties
            high = max(finite, key=lambda vs: (vs[0], -vs[1]))
            assert (row.min_value, row.min_step) == low
            assert (row.max_value, row.max_step) == high


def test_summaries_equal_a_brute_force_scan_through_out_of_order_writes_and_relogs(run):
    rng = random.Random(3)
    steps = list(range(5000))
    rng.shuffle(steps)

    def value(step: int) -> float:
        return float("nan") if step % 97 == 0 else rng.uniform(0.0, 10.0)

    for i in range(0, 5000, 700):  # batches in random step order, as a replay could write them
        upsert_points(run.id, [Point("loss", s, value(s), 0.0) for s in steps[i : i + 700]])
    # A resumed attempt re-logs steps 3000-3999 with new values, including a new spike.
    upsert_points(run.id, [Point("loss", s, 100.0 if s == 3500 else 1.0, 0.0) for s in range(3000, 4000)])
    _check_summaries_against_points(run, "loss")
    top = MetricSummary.objects.get(run=run, key="loss", level=LEVELS - 1, bucket=0)
    assert (top.count, top.max_step, top.max_value) == (5000, 3500, 100.0)


def test_a_relogged_spike_disappears_from_the_chart(run):
    upsert_points(run.id, [Point("loss", s, 50.0 if s == 777 else 1.0, 0.0) for s in range(20_000)])
    assert 50.0 in series(run, "loss", max_points=200)["values"]
    upsert_points(run.id, [Point("loss", 777, 1.0, 0.0)])  # the resumed attempt's value
    assert set(series(run, "loss", max_points=200)["values"]) == {1.0}


@pytest.mark.parametrize(("lo", "hi"), [(0, 99_999), (13, 77_777), (4095, 4097), (50_001, 50_001)])
def test_cover_holds_exactly_the_points_of_a_range(run, lo: int, hi: int):
    upsert_points(run.id, [Point("x", s, float(s % 101), 0.0) for s in range(0, 100_000, 3)])
    store = SummaryStore(MetricPoint, MetricSummary)
    for level in (-1, 0, 2, 4):
        pieces = list(store.cover(run.id, "x", lo, hi, level))
        in_range = [s for s in range(0, 100_000, 3) if lo <= s <= hi]
        assert sum(p.count for p in pieces) == len(in_range)
        assert all(lo <= p.first_step <= p.last_step <= hi for p in pieces)
        assert all(a.last_step < b.first_step for a, b in itertools.pairwise(pieces))  # disjoint, ordered


def test_a_long_series_chart_reads_summaries_not_every_point(run):
    n = 200_000
    values = {s: 2.0 + (s % 1000) / 1000 for s in range(n)}
    values[123_457] = 99.0  # a spike
    values[7] = -5.0  # and a dip
    upsert_points(run.id, [Point("train/loss", s, v, 0.0) for s, v in values.items()])

    store = SummaryStore(MetricPoint, MetricSummary)
    pieces = list(store.cover(run.id, "train/loss", 0, n - 1, 2))  # the level a 2000-point chart uses
    assert len(pieces) < n / 100  # far fewer rows than points

    with CaptureQueriesContext(connection) as queries:
        out = series(run, "train/loss", max_points=2000)
    assert len(queries) <= 2 * LEVELS + 6
    assert len(out["steps"]) <= 2000 and out["steps"] == sorted(out["steps"])
    assert max(out["values"]) == 99.0 and out["steps"][out["values"].index(99.0)] == 123_457
    assert min(out["values"]) == -5.0 and out["steps"][out["values"].index(-5.0)] == 7
    assert all(values[s] == v for s, v in zip(out["steps"], out["values"], strict=True))  # real points
    # A zoom with ragged ends still finds the spike and stays within bounds.
    zoom = series(run, "train/loss", since_step=100_000, until_step=150_003, max_points=500)
    assert 99.0 in zoom["values"] and len(zoom["steps"]) <= 500
    assert zoom["steps"][0] >= 100_001 and zoom["steps"][-1] <= 150_003


def test_a_sparse_series_over_a_long_range_comes_back_whole(run):
    upsert_points(run.id, [Point("val/loss", s, 3.0 - s / 1e6, 0.0) for s in range(0, 1_000_000, 1000)])
    out = series(run, "val/loss", max_points=2000)
    assert out["steps"] == list(range(0, 1_000_000, 1000))


def test_a_bucket_of_only_nan_is_kept_as_a_gap(run):
    points = [Point("loss", s, float("nan") if 4000 <= s < 6000 else 1.0, 0.0) for s in range(10_000)]
    upsert_points(run.id, points)
    out = series(run, "loss", max_points=100)
    gaps = [s for s, v in zip(out["steps"], out["values"], strict=True) if v is None]
    assert gaps and all(4000 <= s < 6000 for s in gaps)


def test_keys_are_recorded_once_per_run_and_key(run):
    upsert_points(run.id, [Point("b", 1, 1.0, 0.0), Point("a", 1, 1.0, 0.0)])
    upsert_points(run.id, [Point("a", 2, 1.0, 0.0)])
    assert keys_for_run(run) == ["a", "b"]
    assert MetricKey.objects.filter(run=run).count() == 2


def test_bucket_widths_grow_by_the_fanout():
    assert [bucket_width(level) for level in range(3)] == [FANOUT, FANOUT**2, FANOUT**3]


def test_the_live_tail_query_is_served_by_the_run_step_index(run):
    """A stream's "every key after step S" must not scan the run's whole history."""
    upsert_points(run.id, [Point(k, s, 1.0, 0.0) for k in ("a", "b") for s in range(100)])
    qs = MetricPoint.objects.filter(run_id=run.id, step__gt=90).order_by("step", "key")
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SET LOCAL enable_seqscan = off")  # a table this small would be read whole
    plan = qs.explain()
    assert "metric_point_run_step" in plan, plan
