"""The run page's chart on a long finished run: downsampled, spikes kept, a zoom fetches the finer points."""

from __future__ import annotations

import pytest
from browser_support import log_in, stored_run
from playwright.sync_api import expect

from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run, RunStatus

N_STEPS = 6000
SPIKE_STEP = 3001


@pytest.fixture
def long_run(alice_project) -> Run:
    run = stored_run(alice_project, "long run", RunStatus.COMPLETED, N_STEPS)
    upsert_points(
        run.id,
        [
            Point("train/loss", s, 50.0 if s == SPIKE_STEP else 1.0 + 4.0 / s, s)
            for s in range(1, N_STEPS + 1)
        ],
    )
    return run


TRACE = "() => { const t = document.getElementById('chart-train-loss').data[0]; return {x: t.x, y: t.y}; }"


def test_long_series_is_downsampled_and_zoom_refines(long_run, start_servers, chromium):
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{long_run.id}/")
    page.wait_for_function("() => document.getElementById('chart-train-loss').data?.[0]?.x?.length > 0")
    full = page.evaluate(TRACE)
    assert 100 < len(full["x"]) <= 2000
    assert max(full["y"]) == 50.0  # min/max buckets keep the spike

    page.evaluate("() => Plotly.relayout('chart-train-loss', {'xaxis.range': [1000, 1100]})")
    page.wait_for_function(
        "() => document.getElementById('chart-train-loss').data[0].x.filter(s => s >= 1000 && s <= 1100).length === 101"
    )
    zoomed = page.evaluate(TRACE)
    assert zoomed["x"] == sorted(zoomed["x"])  # the finer range was spliced in place
    assert zoomed["x"][-1] == full["x"][-1]  # points outside the range stay

    page.evaluate("() => Plotly.relayout('chart-train-loss', {'xaxis.autorange': true})")
    page.wait_for_function("() => document.getElementById('chart-train-loss').data[0].x.length <= 2000")
    expect(page.locator("#run-status")).to_have_text("completed")
    assert js_errors == []


@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_a_running_run_follows_live_over_the_stream_or_the_polling_fallback(
    alice_project, start_servers, chromium, mode, monkeypatch
):
    """rw.live: the same page updates over SSE, or by polling when the client chooses it."""
    # Playwright's sync API runs an event loop in this thread; the writes below are plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    run = stored_run(alice_project, "live run", RunStatus.RUNNING, 2)
    upsert_points(run.id, [Point("train/loss", s, 5.0 - s / 10, s) for s in (1, 2)])
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{run.id}/" + ("?live=poll" if mode == "poll" else ""))
    page.wait_for_function("() => document.getElementById('chart-train-loss').data?.[0]?.x?.length === 2")
    upsert_points(run.id, [Point("train/loss", s, 5.0 - s / 10, s) for s in (3, 4)])
    page.wait_for_function("() => document.getElementById('chart-train-loss').data[0].x.length === 4")
    Run.objects.filter(pk=run.pk).update(status=RunStatus.COMPLETED, step=4)
    expect(page.locator("#run-status")).to_have_text("completed")
    assert page.evaluate(TRACE)["x"] == [1, 2, 3, 4]
    polls = page.evaluate(
        "() => performance.getEntriesByType('resource').filter(e => e.name.includes('poll=1')).length"
    )
    assert (polls > 0) == (mode == "poll")
    assert js_errors == []


@pytest.fixture
def flat_run(alice_project) -> Run:
    run = stored_run(alice_project, "flat run", RunStatus.COMPLETED, 40)
    points = [Point(key, s, value, s) for key, value in FLAT.items() for s in range(1, 41)]
    upsert_points(run.id, points)
    return run


FLAT = {"train/loss": 0.5, "train/lr": 3e-4}  # all values equal; Plotly's own range was v ± 1
FLAT_DRAWN = """(id) => { const div = document.getElementById(id);
  const axis = div._fullLayout.yaxis;
  const path = div.querySelector('.scatterlayer .trace path.js-line').getAttribute('d');
  const ys = (path.match(/[ML][^ML]+/g) || []).map((s) => Number(s.slice(1).split(',')[1]));
  return {y: div.data[0].y, range: axis.range, pixel: axis.l2p(div.data[0].y[0]), zero: axis.l2p(0), ys: ys}; }"""


def test_a_constant_metric_is_drawn_at_its_value_with_a_range_around_it(flat_run, start_servers, chromium):
    """A flat line sits at its value, in a y range of that value's scale (not v ± 1, where 3e-4 looks like 0)."""
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{flat_run.id}/")
    for key, value in FLAT.items():
        chart = "chart-" + key.replace("/", "-")
        page.wait_for_function(f"() => document.getElementById('{chart}').data?.[0]?.x?.length === 40")
        drawn = page.evaluate(FLAT_DRAWN, chart)
        assert set(drawn["y"]) == {value}
        low, high = drawn["range"]
        assert low < value < high and high - low <= value, (key, drawn["range"])
        assert drawn["ys"] and all(
            abs(y - drawn["pixel"]) < 1 for y in drawn["ys"]
        )  # the line is at the value
        assert abs(drawn["pixel"] - drawn["zero"]) > 50  # and visibly not at 0
    page.screenshot(path="/tmp/runwright-runpage-constant.png")
    assert js_errors == []
