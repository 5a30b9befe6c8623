"""Beat re-sends runs and eval jobs left queued (a lost broker message), with a growing wait."""

from __future__ import annotations

import datetime as dt

import pytest
from celery.exceptions import Retry

from modelcore.config import RunConfig, preset
from webapp.evals.models import EvalJob, ModelSource
from webapp.runs.models import Run, RunStatus
from workers import gpus
from workers.eval_jobs import resend_queued_eval_jobs, run_eval_job
from workers.tasks import launch_run, resend_queued_runs


@pytest.fixture
def sent(sent_tasks):
    """``sent(task)``: the ids whose ``task`` reached the broker (the send is recorded instead)."""
    return lambda task: [args[0] for name, args, _ in sent_tasks if name == task.name]


def _age(model, pk: int, seconds: float, **fields) -> None:
    """Move a row's creation (and other times) into the past."""
    past = {k: dt.datetime.now(dt.UTC) - dt.timedelta(seconds=v) for k, v in fields.items()}
    model.objects.filter(pk=pk).update(
        created_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=seconds), **past
    )


def test_queued_runs_older_than_the_requeue_age_are_sent_again(make_run, sent, settings):
    settings.REQUEUE_AFTER_SECONDS = 180
    old, fresh, running = make_run("old"), make_run("fresh"), make_run("running", status=RunStatus.RUNNING)
    _age(Run, old.pk, 200)
    _age(Run, running.pk, 1000)
    assert resend_queued_runs() == [old.id]
    assert sent(launch_run) == [old.id]
    assert fresh.id not in sent(launch_run) and running.id not in sent(launch_run)
    # Sent just now: not again on the next beat.
    assert resend_queued_runs() == []


def test_the_wait_between_sends_doubles(make_run, sent, settings):
    settings.REQUEUE_AFTER_SECONDS = 100
    run = make_run()
    # Queued 1000 s ago, last sent 150 s ago (when it had waited 850 s): due after 850 s more.
    _age(Run, run.pk, 1000, dispatched_at=150)
    assert resend_queued_runs() == []
    _age(Run, run.pk, 1000, dispatched_at=900)  # sent when it had waited 100 s: due after 100 s
    assert resend_queued_runs() == [run.id]


def test_a_run_waiting_for_gpus_is_not_sent_again(make_run, sent, settings, monkeypatch, tmp_path):
    settings.REQUEUE_AFTER_SECONDS = 180
    monkeypatch.setenv("RUNWRIGHT_GPUS", "0")
    monkeypatch.setenv("RUNWRIGHT_GPU_LOCK_DIR", str(tmp_path / "leases"))
    data = preset("tiny-cpu").to_dict()
    data["parallel"].update(num_processes=1, device="auto")
    run = make_run(config=RunConfig.from_dict(data).to_dict())
    _age(Run, run.pk, 600)
    with gpus.lease(1), pytest.raises(Retry):
        launch_run(run.id)  # retries later: its message is alive
    assert resend_queued_runs() == []


def test_queued_eval_jobs_older_than_the_requeue_age_are_sent_again(project, sent, settings):
    settings.REQUEUE_AFTER_SECONDS = 180
    old = EvalJob.objects.create(project=project, source=ModelSource.HF, hf_path="m", tasks=["t"])
    fresh = EvalJob.objects.create(project=project, source=ModelSource.HF, hf_path="m", tasks=["t"])
    _age(EvalJob, old.pk, 400)
    assert resend_queued_eval_jobs() == [old.id]
    assert sent(run_eval_job) == [old.id] and fresh.id not in sent(run_eval_job)
    assert resend_queued_eval_jobs() == []


def test_beat_resends_both_kinds_and_eval_tasks_ack_late():
    from workers import app

    tasks = {entry["task"] for entry in app.conf.beat_schedule.values()}
    assert {"workers.tasks.resend_queued_runs", "workers.eval_jobs.resend_queued_eval_jobs"} <= tasks
    for name in ("workers.tasks.resend_queued_runs", "workers.eval_jobs.resend_queued_eval_jobs"):
        assert name in app.tasks and app.tasks[name].time_limit
    # A worker killed mid-job must not take the job's message with it.
    assert run_eval_job.acks_late and launch_run.acks_late
