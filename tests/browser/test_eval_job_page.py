"""The eval job page follows its job like a run page (rw.live): over its SSE stream, or by
polling its status when the client chooses that; it reloads into the results once the job ends.

Screenshots land in /tmp/runwright-eval-job-*.png.
"""

from __future__ import annotations

import pytest
from browser_support import log_in

from webapp.evals import transitions
from webapp.evals.models import EVAL_STATES, EvalJob, EvalStatus, ModelSource


@pytest.mark.parametrize("mode", ["stream", "poll"])
def test_the_job_page_follows_the_job_over_the_stream_or_the_polling_fallback(
    alice_project, start_servers, chromium, mode, monkeypatch
):
    # Playwright's sync API runs an event loop in this thread; the writes below are plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    job = EVAL_STATES.create(
        EvalJob.objects,
        EvalStatus.QUEUED,
        project=alice_project,
        source=ModelSource.HF,
        hf_path="m",
        tasks=["rw_arith", "rw_facts"],
    )
    transitions.JOBS.claim(job.id, "test-worker")
    transitions.record_progress(job.id, 0.1, "rw_arith")
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/evals/{job.id}/" + ("?live=poll" if mode == "poll" else ""))
    assert page.locator("#progress-fill").get_attribute("style") == "width: 10%"
    transitions.record_progress(job.id, 0.62, "rw_facts")
    page.wait_for_function("document.getElementById('progress-text').textContent.startsWith('62')")
    assert page.locator("#progress-task").inner_text() == "rw_facts"
    page.wait_for_timeout(600)  # the bar's width transition
    page.screenshot(path=f"/tmp/runwright-eval-job-{mode}-running.png", full_page=True)
    # Over the stream the page never polled its status: the progress came pushed.
    polls = page.evaluate(
        "() => performance.getEntriesByType('resource').filter(e => e.name.includes('/status')).length"
    )
    assert (polls > 0) == (mode == "poll")

    scores = {"results": {"rw_arith": {"acc,none": 0.7}, "rw_facts": {"acc,none": 0.62}}}
    transitions.finish(job.id, EvalStatus.COMPLETED, results=scores)
    page.wait_for_selector("#job-status:text('completed')")  # the page reloads once the job ends
    page.screenshot(path=f"/tmp/runwright-eval-job-{mode}-done.png", full_page=True)
    assert js_errors == []
