"""The demo's scenario: once the short run completes, both runs' checkpoints are evaluated on the
built-in tasks with a report comparing them, exactly once."""

from __future__ import annotations

import pytest

from webapp.demo.services import LIVE_RUN, REPORT, SHORT_RUN, advance_demo, ensure_demo_user, queue_demo_runs
from webapp.evals.models import EvalJob, Report
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus


@pytest.mark.django_db
def test_the_short_run_is_evaluated_against_the_live_run_once_it_has_completed(
    settings, tmp_path, sent_tasks, django_capture_on_commit_callbacks
):
    settings.DATA_DIR = tmp_path
    user, _, project = ensure_demo_user()
    live, short = queue_demo_runs(user, project)
    assert (live.name, short.name) == (LIVE_RUN, SHORT_RUN)
    assert short.config["train"]["max_steps"] < 1000 and short.config["train"]["sample_every"] > 0
    assert live.config["train"]["max_steps"] >= 20 * short.config["train"]["max_steps"]

    assert advance_demo(user, project) is None  # nothing has run yet
    for run, steps in ((live, [100, 200]), (short, [300, 400])):
        transitions.record_checkpoints(
            run.id, [{"step": s, "path": f"checkpoints/step_{s:06d}"} for s in steps]
        )
    Run.objects.filter(pk=live.pk).update(status=RunStatus.RUNNING)
    assert advance_demo(user, project) is None  # the short run has not completed
    Run.objects.filter(pk=short.pk).update(status=RunStatus.COMPLETED)

    with django_capture_on_commit_callbacks(execute=True):
        report = advance_demo(user, project)
    assert report is not None and report.name == REPORT
    jobs = sorted(report.jobs.all(), key=lambda j: j.run_id)
    assert [(j.run_id, j.checkpoint_step) for j in jobs] == [(live.id, 200), (short.id, 400)]
    assert set(jobs[0].tasks) >= {"rw_arith", "rw_facts"} and jobs[0].limit > 0
    assert advance_demo(user, project) == report  # once
    assert EvalJob.objects.count() == 2 and Report.objects.count() == 1
    assert [name for name, _, _ in sent_tasks].count("workers.eval_jobs.run_eval_job") == 2
