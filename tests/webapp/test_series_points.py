"""A chart asks the series endpoints for as many points as it can show (``?points=``)."""

from __future__ import annotations

import pytest

from webapp.metrics.services import Point, upsert_points

STEPS = 5000


@pytest.fixture
def long_run(make_run):
    run = make_run()
    upsert_points(run.id, [Point("train/loss", s, 1.0 + 4.0 / s, s) for s in range(1, STEPS + 1)])
    return run


@pytest.mark.parametrize(
    ("points", "most"),
    [("1200", 1200), ("5", 100), ("99999", 2000), ("", 2000), ("abc", 2000), ("-3", 100)],
)
def test_run_series_gives_at_most_the_points_asked_within_bounds(client_for, alice, long_run, points, most):
    response = client_for(alice).get(f"/runs/{long_run.id}/series?key=train/loss&points={points}")
    assert response.status_code == 200
    steps = response.json()["series"][0]["steps"]
    assert most // 2 < len(steps) <= most
    assert steps[0] == 1 and steps[-1] == STEPS  # still the whole range


def test_compare_series_takes_points_too(client_for, alice, long_run, make_run, project):
    other = make_run(name="other")
    url = f"/projects/{project.id}/compare/series?run={long_run.id}&run={other.id}&key=train/loss&points=300"
    series = client_for(alice).get(url).json()["series"][0]
    assert 150 < len(series["steps"]) <= 300


def test_run_series_does_not_repeat_the_runs_keys(client_for, alice, long_run):
    """Each panel reads its own series; the run's key list (kilobytes at 200 keys) comes with the page."""
    upsert_points(long_run.id, [Point(f"extra/k{i}", 1, 1.0, 1) for i in range(20)])
    body = client_for(alice).get(f"/runs/{long_run.id}/series?key=train/loss").json()
    assert set(body) == {"series", "step", "cursor"}
    assert [s["key"] for s in body["series"]] == ["train/loss"]
