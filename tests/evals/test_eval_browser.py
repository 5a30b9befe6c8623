"""In Chromium: the report page draws its Plotly charts (the job page following its job, over
its SSE stream from the ASGI server, is tests/browser/test_eval_job_page.py).

Screenshots land in /tmp/runwright-eval-*.png.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from eval_fixtures import mc_samples, results_payload, write_results_file
from service_processes import CHROMIUM, CHROMIUM_ARGS

from webapp.evals.models import EvalJob, EvalStatus, ModelSource, Report

SHOTS = Path("/tmp")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium"),
    pytest.mark.django_db(transaction=True),
]


@pytest.fixture
def page(live_server, client, alice, monkeypatch):
    from playwright.sync_api import sync_playwright

    # Playwright's sync API runs an event loop in this thread; the test's ORM calls are still plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

    client.force_login(alice)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.add_cookies(
            [{"name": "sessionid", "value": client.cookies["sessionid"].value, "url": live_server.url}]
        )
        tab = context.new_page()
        errors: list[str] = []
        tab.on("pageerror", lambda exc: errors.append(str(exc)))
        yield tab
        browser.close()
        assert errors == [], errors


def _job(project, run, step, scores, correct):
    job = EvalJob.objects.create(
        project=project,
        source=ModelSource.CHECKPOINT,
        run=run,
        checkpoint_step=step,
        tasks=list(scores),
        status=EvalStatus.COMPLETED,
        progress=1.0,
        results=results_payload(scores),
        has_samples=True,
    )
    write_results_file(job, results_payload(scores, {"rw_arith": mc_samples(correct)}))
    return job


def test_report_page_draws_charts(page, live_server, data_dir, project, run, alice):
    jobs = [
        _job(
            project,
            run,
            20,
            {"rw_arith": {"acc": 0.45, "acc_stderr": 0.08}, "rw_facts": {"acc": 0.5}},
            [1] * 18 + [0] * 22,
        ),
        _job(
            project,
            run,
            40,
            {"rw_arith": {"acc": 0.7, "acc_stderr": 0.07}, "rw_facts": {"acc": 0.62}},
            [1] * 28 + [0] * 12,
        ),
    ]
    report = Report.objects.create(project=project, name="tiny-cpu checkpoints", created_by=alice)
    report.jobs.set(jobs)
    page.goto(f"{live_server.url}/reports/{report.id}/")
    page.wait_for_selector("#bar-charts .js-plotly-plot")
    page.wait_for_selector("#step-charts .js-plotly-plot")
    assert page.locator("#bar-charts .js-plotly-plot").count() == 2
    assert page.locator("td.best").count() == 2
    assert "0 / 10" in page.locator("#pair-table").inner_text()  # McNemar: B alone right on 10 samples
    page.screenshot(path=str(SHOTS / "runwright-eval-report.png"), full_page=True)
    page.click("text=where they disagree")
    page.wait_for_selector("#disagreements")
    assert "10 of 40 shared samples differ" in page.locator("#disagree-summary").inner_text()
    page.screenshot(path=str(SHOTS / "runwright-eval-disagreements.png"))


def test_html_export_draws_its_charts_offline(
    page, live_server, data_dir, project, run, alice, client, tmp_path
):
    jobs = [
        _job(project, run, 20, {"rw_arith": {"acc": 0.45, "acc_stderr": 0.08}}, [1] * 18 + [0] * 22),
        _job(project, run, 40, {"rw_arith": {"acc": 0.7, "acc_stderr": 0.07}}, [1] * 28 + [0] * 12),
    ]
    report = Report.objects.create(project=project, name="offline", created_by=alice)
    report.jobs.set(jobs)
    exported = tmp_path / "report.html"
    exported.write_bytes(client.get(f"/reports/{report.id}/export.html").content)
    page.route(
        "**/*",
        lambda route: route.abort() if not route.request.url.startswith("file:") else route.continue_(),
    )
    page.goto(exported.as_uri())
    page.wait_for_selector("#bar-charts .js-plotly-plot")
    assert page.locator("#step-charts .js-plotly-plot").count() == 1
    page.screenshot(path=str(SHOTS / "runwright-eval-export.png"), full_page=True)


def test_eval_form_and_project_page(page, live_server, project, run):
    page.goto(f"{live_server.url}/projects/{project.id}/evals/new")
    page.select_option("#id_models", [f"ckpt:{run.id}:40"])
    page.check("input[name=tasks][value=rw_arith]")
    page.fill("#id_limit", "0")
    page.click("#eval-form button[type=submit]")
    assert "greater than or equal to 1" in page.locator(".field-error").first.inner_text()
    page.screenshot(path=str(SHOTS / "runwright-eval-form.png"), full_page=True)
    page.fill("#id_limit", "5")
    page.click("#eval-form button[type=submit]")
    page.wait_for_selector("#progress-bar")
    job = EvalJob.objects.get()
    assert (job.checkpoint_step, job.tasks, job.limit) == (40, ["rw_arith"], 5)
    page.goto(f"{live_server.url}/projects/{project.id}/evals/")
    page.screenshot(path=str(SHOTS / "runwright-eval-project.png"), full_page=True)
