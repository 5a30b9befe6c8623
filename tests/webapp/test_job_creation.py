"""Jobs are created in their table's initial states, and the moves before a claim are written once."""

from __future__ import annotations

import pytest

from webapp.evals import transitions as eval_transitions
from webapp.evals.models import EVAL_STATES, EvalJob, EvalStatus, ModelSource
from webapp.lifecycle import IllegalTransition
from webapp.runs import transitions as run_transitions
from webapp.runs.models import RUN_STATES, Run, RunStatus


def _run(project, status=RunStatus.QUEUED) -> Run:
    return RUN_STATES.create(Run.objects, status, project=project, name="r", config={})


def _job(project) -> EvalJob:
    return EVAL_STATES.create(
        EvalJob.objects, EvalStatus.QUEUED, project=project, source=ModelSource.HF, hf_path="m", tasks=["t"]
    )


@pytest.mark.parametrize("status", [RunStatus.STARTING, RunStatus.COMPLETED, RunStatus.LOST])
def test_a_run_cannot_be_created_past_its_start(project, status):
    with pytest.raises(IllegalTransition, match="starts queued or running"):
        _run(project, status)
    assert not Run.objects.exists()


def test_an_eval_job_cannot_be_created_running(project):
    with pytest.raises(IllegalTransition, match="starts completed or queued"):
        EVAL_STATES.create(EvalJob.objects, EvalStatus.RUNNING, project=project, tasks=["t"])
    assert not EvalJob.objects.exists()


def test_failing_a_queued_job_is_the_same_write_for_runs_and_eval_jobs(project):
    run, job = _run(project), _job(project)
    assert run_transitions.fail_queued(run.id, "broker down")
    assert eval_transitions.JOBS.fail_queued(job.id, "broker down")
    for row in (Run.objects.get(pk=run.pk), EvalJob.objects.get(pk=job.pk)):
        assert row.status == "failed" and row.error == "broker down" and row.finished_at is not None
    # Once claimed (or already ended) a job is no longer "queued": nothing is written.
    assert not run_transitions.fail_queued(run.id, "again")
    assert not eval_transitions.JOBS.cancel_queued(job.id)


def test_cancelling_a_queued_job_is_the_same_write_for_runs_and_eval_jobs(project):
    run, job = _run(project), _job(project)
    assert run_transitions.cancel_queued(run.id)
    assert eval_transitions.JOBS.cancel_queued(job.id)
    for row in (Run.objects.get(pk=run.pk), EvalJob.objects.get(pk=job.pk)):
        assert row.status == "cancelled" and row.cancel_requested and row.finished_at is not None


def test_a_claimed_run_is_not_cancelled_as_queued(project):
    run = _run(project)
    assert run_transitions.claim_for_launch(run.id, "w") is not None
    assert not run_transitions.cancel_queued(run.id)
    assert Run.objects.get(pk=run.pk).status == RunStatus.STARTING
