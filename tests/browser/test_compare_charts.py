"""Comparing runs in the browser: tick runs on the project page, see one line per run."""

from __future__ import annotations

import pytest
from browser_support import log_in

from modelcore.config import resolve
from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run, RunStatus


@pytest.fixture
def three_runs(alice_project) -> list[Run]:
    runs = []
    for i, name in enumerate(("baseline", "lr 3e-3", "not picked")):
        config = resolve("tiny-cpu", {"optim": {"lr": 3e-3 if name == "lr 3e-3" else 1e-3}}).to_dict()
        run = Run.objects.create(
            project=alice_project,
            name=name,
            preset="tiny-cpu",
            config=config,
            status=RunStatus.COMPLETED,
            step=300,
            last_loss=2.0 - i / 10,
        )
        points = [
            Point("train/loss", s, 5.0 / (1 + s / (50 + 40 * i)) + 1.0, float(s)) for s in range(1, 301)
        ]
        points += [
            Point("val/loss", s, 4.0 / (1 + s / (50 + 40 * i)) + 1.5, float(s)) for s in range(50, 301, 50)
        ]
        upsert_points(run.id, points)
        runs.append(run)
    return runs


CHART = "(id) => document.getElementById(id).data.map(t => ({name: t.name, n: t.x.length}))"


def test_tick_two_runs_and_compare_their_curves(three_runs, start_servers, chromium, tmp_path):
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/projects/{three_runs[0].project_id}/")
    page.get_by_label("Compare baseline").check()
    page.wait_for_timeout(2500)  # one refresh of the runs table: the ticks must survive it
    page.get_by_label("Compare lr 3e-3").check()
    assert page.get_by_label("Compare baseline").is_checked()
    page.screenshot(path=str(tmp_path / "project.png"), full_page=True)
    page.get_by_role("button", name="Compare selected runs").click()

    page.wait_for_function("() => document.getElementById('compare-metric').data?.length === 2")
    # One line per run, in the runs table's order (newest first).
    assert page.evaluate(CHART, "compare-loss") == [
        {"name": "lr 3e-3", "n": 300},
        {"name": "baseline", "n": 300},
    ]
    assert page.evaluate(CHART, "compare-metric") == [
        {"name": "lr 3e-3", "n": 6},
        {"name": "baseline", "n": 6},
    ]
    assert page.locator("#compare-key").input_value() == "val/loss"
    assert "not picked" not in page.locator("#compare-runs").inner_text()
    differences = page.locator("#config-differences tbody").inner_text()
    assert "optim.lr" in differences and "model.d_model" not in differences

    page.select_option("#compare-key", "train/loss")
    page.wait_for_function("() => document.getElementById('compare-metric').data[0].x.length === 300")
    page.screenshot(path=str(tmp_path / "compare.png"), full_page=True)
    assert js_errors == []


def test_compare_with_one_run_explains_what_to_do(three_runs, start_servers, chromium):
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/projects/{three_runs[0].project_id}/")
    page.get_by_label("Compare baseline").check()
    page.get_by_role("button", name="Compare selected runs").click()
    assert "pick at least two runs" in page.locator("#compare-errors").inner_text()
    assert js_errors == []


@pytest.fixture
def twin_runs(three_runs) -> list[Run]:
    """Two runs named alike (set up before the browser starts: Playwright's loop forbids the ORM)."""
    first, _, third = three_runs
    Run.objects.filter(pk=third.pk).update(name="baseline")
    return [first, third]


def test_runs_with_the_same_name_are_told_apart_by_id(twin_runs, start_servers, chromium):
    first, third = twin_runs
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/projects/{first.project_id}/compare?run={first.id}&run={third.id}")
    page.wait_for_function("() => document.getElementById('compare-loss').data?.length === 2")
    names = [t["name"] for t in page.evaluate(CHART, "compare-loss")]
    assert names == [f"baseline #{first.id}", f"baseline #{third.id}"]
    assert js_errors == []


def test_the_runs_list_filters_as_you_type(three_runs, start_servers, chromium):
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/projects/{three_runs[0].project_id}/")
    visible = "() => Array.from(document.querySelectorAll('#runs-table tbody tr:not([hidden]) td:nth-child(2) a'), a => a.textContent)"
    page.get_by_label("Compare baseline").check()
    page.fill("#runs-q", "lr")  # the server filters as you type (webapp/runs/filters.py)
    page.wait_for_function(f"() => ({visible})().length === 1")
    assert page.evaluate(visible) == ["lr 3e-3"]
    assert "q=lr" in page.url  # the address keeps the filter
    page.wait_for_timeout(2500)  # a refresh of the table keeps the filter
    assert page.evaluate(visible) == ["lr 3e-3"]
    page.fill("#runs-q", "completed base")  # every word must match
    page.wait_for_function(f"() => ({visible})()[0] === 'baseline'")
    assert page.evaluate(visible) == ["baseline"]
    assert page.get_by_label("Compare baseline").is_checked()  # a tick outlives the filter
    page.fill("#runs-q", "")
    page.wait_for_function(f"() => ({visible})().length === 3")
    assert js_errors == []
