"""In Chromium: a run trains, is cancelled, is resumed from its checkpoint, and its chart goes on.

A real Celery worker trains the tiny preset beside the web server. Screenshots land in
/tmp/runwright-resume-*.png.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from browser_support import log_in, workers_available
from playwright.sync_api import expect

SHOTS = Path("/tmp")
MAX_STEPS = 40
STEPS = "() => { const t = document.getElementById('chart-train-loss')?.data?.[0]; return t ? t.x : []; }"


def chart_steps(page) -> list[int]:
    return page.evaluate(STEPS)


def wait_until(page, condition, what: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}; log:\n" + page.inner_text("#run-log")[-3000:]
        page.wait_for_timeout(500)


def test_resume_a_cancelled_run_and_watch_its_chart_continue(alice_project, start_servers, chromium):
    if not workers_available():
        pytest.skip("needs the workers package: a real worker trains the run")
    base = start_servers(worker=True)
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/projects/{alice_project.id}/runs/new")
    page.select_option("[name=preset]", "tiny-cpu")
    page.fill("[name=name]", "resumable run")
    page.fill("[name='train.max_steps']", str(MAX_STEPS))
    page.fill("[name='parallel.num_processes']", "1")
    page.fill("[name='train.eval_every']", "0")
    page.click("button:has-text('Launch run')")
    page.wait_for_url(f"{base}/runs/*/")
    run_url = page.url

    wait_until(
        page, lambda: len(chart_steps(page)) >= 4, "the first attempt's points never reached the chart"
    )
    page.click("#cancel-button")
    expect(page.locator("#run-status")).to_have_text("cancelled", timeout=60_000)
    before = chart_steps(page)
    assert before and before[-1] < MAX_STEPS, before

    # The ended run's page offers to resume it, without a reload.
    resume = page.locator("#resume-button")
    expect(resume).to_be_visible(timeout=15_000)
    saved = int(resume.inner_text().rsplit(" ", 1)[-1])  # "Resume from step N"
    assert before[-1] - 2 <= saved <= MAX_STEPS
    expect(page.locator("#attempt-1")).to_contain_text("cancelled")
    page.screenshot(path=str(SHOTS / "runwright-resume-cancelled.png"), full_page=True)

    resume.click()
    page.wait_for_url(run_url)
    expect(page.locator(".messages")).to_contain_text("Resumed")
    # The same chart goes on past the checkpoint, live, up to the end.
    wait_until(page, lambda: max(chart_steps(page) or [0]) == MAX_STEPS, "the chart did not continue")
    expect(page.locator("#run-status")).to_have_text("completed", timeout=60_000)
    steps = chart_steps(page)
    assert steps[0] == before[0] and steps == sorted(set(steps)), steps  # one line, no step twice
    assert [s for s in steps if s <= saved] == [s for s in before if s <= saved]

    page.goto(run_url)
    expect(page.locator("#attempt-2")).to_contain_text(f"resumed from step {saved}")
    expect(page.locator("#attempt-2")).to_contain_text("completed")
    expect(page.locator("#resume-button")).to_have_count(0)
    page.wait_for_function("() => document.getElementById('chart-train-loss')?.data?.[0]?.x?.length > 0")
    page.screenshot(path=str(SHOTS / "runwright-resume-completed.png"), full_page=True)
    assert js_errors == []
