"""In Chromium: log in, fill the new-run form (tiny-cpu), submit, watch the chart grow, cancel.

When the ``workers`` package is importable a real Celery worker runs beside the
web server, so the run really trains; without it the test stops after the run
page and says so. Screenshots land in /tmp/runwright-*.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser_support import PASSWORD, workers_available
from playwright.sync_api import expect

SHOTS = Path("/tmp")


def points_in_chart(page) -> int:
    return page.evaluate(
        # A new run's train/loss panel appears with its first point (panels follow the keys).
        "() => { const el = document.getElementById('chart-train-loss'); const d = el && el.data;"
        " return d ? d.reduce((n, t) => n + (t.x ? t.x.length : 0), 0) : 0; }"
    )


def test_new_run_in_the_browser(alice_project, start_servers, chromium):
    with_worker = workers_available()
    base = start_servers(worker=with_worker)
    page, js_errors = chromium
    page.goto(base + "/")
    expect(page.locator("h1")).to_have_text("Log in")
    page.screenshot(path=str(SHOTS / "runwright-login.png"))
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Hello, alice")  # the home page
    page.screenshot(path=str(SHOTS / "runwright-home.png"))
    page.click("nav >> text=Projects")
    expect(page.locator("h1")).to_have_text("Projects")
    page.screenshot(path=str(SHOTS / "runwright-projects.png"))

    page.click("text=browser project")
    page.click("text=New run")
    expect(page.locator("legend", has_text="Model")).to_be_visible()
    assert page.input_value("[name='model.d_model']") == "64"  # tiny-cpu is the default preset
    expect(page.locator("[data-est=num_params]")).not_to_have_text("–")

    # The preset selector fills the form without a reload.
    page.select_option("[name=preset]", "gpt2-small")
    assert page.input_value("[name='model.d_model']") == "768"
    page.select_option("[name=preset]", "tiny-cpu")
    assert page.input_value("[name='model.d_model']") == "64"

    # A relation error comes back next to its field, with every value kept.
    page.fill("[name=name]", "browser run")
    page.fill("[name='model.n_heads']", "5")
    page.fill("[name='model.n_kv_heads']", "0")
    page.fill("[name='train.max_steps']", "3000")
    page.fill("[name='parallel.num_processes']", "1")
    page.click("button:has-text('Launch run')")
    error = page.locator("[data-field='model.n_heads'] .field-error")
    expect(error).to_have_text("must divide model.d_model (64)")
    assert page.input_value("[name='train.max_steps']") == "3000"
    page.locator("#section-model").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "runwright-new-run-error.png"), full_page=True)

    page.fill("[name='model.n_heads']", "4")
    expect(error).to_be_hidden()  # the live check clears it once the config is valid
    expect(page.locator("#error-summary")).to_be_hidden()
    expect(page.locator("[data-est=num_params]")).not_to_have_text("–")
    page.screenshot(path=str(SHOTS / "runwright-new-run.png"))
    page.click("button:has-text('Launch run')")
    expect(page.locator("h1")).to_contain_text("browser run")
    run_url = page.url

    if not with_worker:
        expect(page.locator("#run-status")).to_have_text("queued")
        page.screenshot(path=str(SHOTS / "runwright-run.png"), full_page=True)
        page.click("#cancel-button")
        expect(page.locator("#run-status")).to_have_text("cancelled")
        assert js_errors == []
        pytest.skip("the workers package is not importable: chart growth not checked")

    # The chart grows while the run trains (points arrive over SSE).
    deadline = time.monotonic() + 240
    while points_in_chart(page) < 2:
        assert time.monotonic() < deadline, "no points reached the chart: " + page.inner_text("#run-log")
        page.wait_for_timeout(1000)
    first = points_in_chart(page)
    expect(page.locator("#run-status")).to_have_text("running")
    while points_in_chart(page) <= first:
        assert time.monotonic() < deadline, "the chart stopped growing"
        page.wait_for_timeout(1000)
    page.wait_for_timeout(3000)
    page.screenshot(path=str(SHOTS / "runwright-run.png"), full_page=True)

    page.goto(base + "/projects/")
    page.click("text=browser project")
    expect(page.locator("#runs-table .badge").first).to_have_text("running")
    step_before = page.inner_text("#runs-table tbody tr td.num")
    page.wait_for_timeout(4500)  # two polls
    assert page.inner_text("#runs-table tbody tr td.num") != step_before, "the runs list did not update"
    page.screenshot(path=str(SHOTS / "runwright-runs-list.png"), full_page=True)

    page.goto(run_url)
    page.click("#cancel-button")
    expect(page.locator("#run-status")).to_have_text("cancelled", timeout=30_000)
    # The checkpoint saved on cancel is offered for evaluation without a reload.
    expect(page.locator("#run-eval-step")).to_be_visible(timeout=10_000)
    page.screenshot(path=str(SHOTS / "runwright-run-cancelled.png"), full_page=True)
    assert js_errors == []
