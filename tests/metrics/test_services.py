"""Point upserts are idempotent and a re-logged step replaces the old value."""

from __future__ import annotations

import math

from webapp.metrics.models import MetricPoint
from webapp.metrics.services import Point, upsert_points


def stored(run):
    return sorted(MetricPoint.objects.filter(run=run).values_list("key", "step", "value"))


def test_upserting_the_same_points_twice_stores_them_once(run):
    points = [Point("train/loss", s, 10.0 / s, 100.0 + s) for s in range(1, 2501)]
    assert upsert_points(run.id, points) == 2500
    first = stored(run)
    assert upsert_points(run.id, points) == 2500
    assert stored(run) == first and len(first) == 2500


def test_a_relogged_step_replaces_the_value_even_within_one_batch(run):
    upsert_points(run.id, [Point("train/loss", 5, 3.0, 1.0)])
    upsert_points(run.id, [Point("train/loss", 5, 2.0, 2.0), Point("train/loss", 5, 1.5, 3.0)])
    assert stored(run) == [("train/loss", 5, 1.5)]
    assert MetricPoint.objects.get(run=run).time == 3.0


def test_non_finite_values_are_stored_as_null(run):
    upsert_points(
        run.id, [Point("a", 1, math.nan, 0.0), Point("a", 2, math.inf, 0.0), Point("a", 3, None, 0.0)]
    )
    assert stored(run) == [("a", 1, None), ("a", 2, None), ("a", 3, None)]


def seqs(run):
    return dict(
        ((key, step), seq)
        for key, step, seq in MetricPoint.objects.filter(run=run).values_list("key", "step", "seq")
    )


def test_every_write_numbers_its_rows_after_the_runs_last_write(run):
    """A stream follows ``seq``: a late key for an old step, or a re-logged step, sorts after what it sent."""
    upsert_points(run.id, [Point("train/loss", s, 1.0, 0.0) for s in (1, 2, 3)])
    first = seqs(run)
    assert sorted(first.values()) == [1, 2, 3]
    upsert_points(run.id, [Point("val/loss", 2, 1.0, 0.0), Point("train/loss", 3, 0.5, 0.0)])
    later = seqs(run)
    assert later[("val/loss", 2)] > max(first.values()) and later[("train/loss", 3)] > max(first.values())
    assert later[("train/loss", 1)] == first[("train/loss", 1)]  # untouched rows keep theirs
    assert len(set(later.values())) == len(later)


def test_runs_are_numbered_apart(run):
    other = type(run).objects.create(project=run.project, name="other", config=run.config)
    upsert_points(run.id, [Point("a", s, 1.0, 0.0) for s in range(5)])
    upsert_points(other.id, [Point("a", 0, 1.0, 0.0)])
    assert list(seqs(other).values()) == [1]
