"""Chart reads: series downsampled by min/max (spikes survive), keys, points for live polling."""

from __future__ import annotations

import pytest

from webapp.metrics.selectors import downsample_minmax, keys_for_run, latest_points, series
from webapp.metrics.services import Point, upsert_points


def test_short_series_come_back_whole_in_step_order(run):
    upsert_points(run.id, [Point("train/loss", s, float(100 - s), 0.0) for s in (3, 1, 2)])
    assert series(run, "train/loss") == {
        "key": "train/loss",
        "steps": [1, 2, 3],
        "values": [99.0, 98.0, 97.0],
    }


def test_long_series_are_downsampled_without_losing_a_spike_or_a_dip(run):
    values = {s: 3.0 - s * 1e-4 for s in range(10_000)}
    values[4321] = 50.0  # a loss spike
    values[7777] = -1.0  # and a dip
    upsert_points(run.id, [Point("train/loss", s, v, 0.0) for s, v in values.items()])
    out = series(run, "train/loss", max_points=500)
    assert len(out["steps"]) <= 500
    assert out["steps"] == sorted(out["steps"])
    assert max(out["values"]) == 50.0 and out["steps"][out["values"].index(50.0)] == 4321
    assert min(out["values"]) == -1.0 and out["steps"][out["values"].index(-1.0)] == 7777
    assert out["steps"][0] == 0 and out["steps"][-1] == 9999
    assert set(out["values"]) <= set(values.values())  # real points only, never averages


def test_a_zoomed_range_is_finer(run):
    upsert_points(run.id, [Point("x", s, float(s % 7), 0.0) for s in range(5000)])
    zoom = series(run, "x", since_step=999, until_step=1999, max_points=2000)
    assert zoom["steps"] == list(range(1000, 2000))


def test_downsample_keeps_a_gap_where_a_bucket_is_all_nan():
    steps = list(range(10))
    values = [1.0, 2.0, None, None, None, 4.0, 5.0, 6.0, 7.0, 8.0]
    # 4 buckets: steps 0-1, 2-4 (all NaN), 5-6, 7-9
    out_steps, out_values = downsample_minmax(steps, values, 8)
    assert list(zip(out_steps, out_values, strict=True)) == [
        (0, 1.0),
        (1, 2.0),
        (2, None),
        (5, 4.0),
        (6, 5.0),
        (7, 6.0),
        (9, 8.0),
    ]


def test_one_point_is_the_latest_and_zero_is_refused(run):
    upsert_points(run.id, [Point("x", s, float(s), 0.0) for s in range(10)])
    assert series(run, "x", max_points=1) == {"key": "x", "steps": [9], "values": [9.0]}
    with pytest.raises(ValueError, match="max_points"):
        series(run, "x", max_points=0)


def test_keys_and_latest_points_for_live_polling(run):
    upsert_points(
        run.id, [Point(k, s, float(s), 0.0) for k in ("train/loss", "train/lr") for s in range(1, 6)]
    )
    upsert_points(run.id, [Point("val/loss", 4, 2.0, 0.0)])
    assert keys_for_run(run) == ["train/loss", "train/lr", "val/loss"]
    assert latest_points(run, since_step=3) == {
        "train/loss": [[4, 4.0], [5, 5.0]],
        "train/lr": [[4, 4.0], [5, 5.0]],
        "val/loss": [[4, 2.0]],
    }
    assert latest_points(run, since_step=5) == {}
    assert set(latest_points(run)) == {"train/loss", "train/lr", "val/loss"}
