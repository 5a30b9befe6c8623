"""The comparison page's charts have the run page's controls: smoothing, log y, x by tokens, raw CSV."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from browser_support import log_in

from modelcore.config import resolve
from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run, RunStatus

N = 200


@pytest.fixture
def two_runs(alice_project) -> list[Run]:
    runs = []
    for i, tokens_per_step in enumerate((1000, 4000)):
        run = Run.objects.create(
            project=alice_project,
            name=f"run {i}",
            preset="tiny-cpu",
            config=resolve("tiny-cpu").to_dict(),
            status=RunStatus.COMPLETED,
            step=N,
        )
        points = []
        for s in range(1, N + 1):
            points.append(Point("train/loss", s, 3.0 + i + (0.5 if s % 2 else -0.5), 1e9 + s))
            points.append(Point("perf/tokens_seen", s, float(s * tokens_per_step), 1e9 + s))
        upsert_points(run.id, points)
        runs.append(run)
    return runs


def test_compare_charts_smooth_log_tokens_and_csv(two_runs, start_servers, chromium):
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    ids = "&".join(f"run={r.id}" for r in two_runs)
    page.goto(f"{base}/projects/{two_runs[0].project_id}/compare?{ids}")
    page.wait_for_function("() => document.getElementById('compare-loss').data?.length === 2")

    page.get_by_label("Smoothing of loss").evaluate(
        "(el) => { el.value = '0.9'; el.dispatchEvent(new Event('input')); }"
    )
    page.wait_for_function("() => document.getElementById('compare-loss').data.length === 4")
    spread = page.evaluate(
        "() => { const y = document.getElementById('compare-loss').data[1].y.slice(100);"
        " return Math.max(...y) - Math.min(...y); }"
    )
    assert spread < 0.3  # the ±0.5 zigzag is smoothed; the raw line (data[0]) keeps it

    page.get_by_label("Log scale of loss").check()
    page.wait_for_function("() => document.getElementById('compare-loss')._fullLayout.yaxis.type === 'log'")

    # Each run's line on its own tokens-seen axis.
    page.get_by_label("X axis of loss").select_option("tokens")
    page.wait_for_function("() => document.getElementById('compare-loss').data[0].x[0] === 1000")
    last_x = page.evaluate("() => document.getElementById('compare-loss').data.map(t => t.x[t.x.length - 1])")
    assert last_x == [N * 1000, N * 1000, N * 4000, N * 4000]

    with page.expect_download() as download:
        page.locator("#compare-loss").locator("..").locator("button.csv").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [int(r["run"]) for r in rows] == [two_runs[0].id] * N + [two_runs[1].id] * N
    assert float(rows[0]["value"]) == 3.5  # raw, not smoothed
    page.screenshot(path="/tmp/runwright-compare-controls.png", full_page=True)
    assert js_errors == []
