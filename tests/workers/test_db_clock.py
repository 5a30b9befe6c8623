"""Heartbeats and the sweeps use the database's clock: a worker whose clock is off is not lost.

A worker's clock is simulated off by an hour (``timezone.now`` is what Django and our
code read for "now"); the database's own clock is untouched. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone

from webapp.evals import transitions as eval_transitions
from webapp.evals.models import EvalJob, EvalStatus, ModelSource
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from workers.sweep import sweep_lost_runs

HOUR = dt.timedelta(hours=1)


def db_now() -> dt.datetime:
    return Run.objects.annotate(now=Now()).values_list("now", flat=True).first() or _db_now_without_rows()


def _db_now_without_rows() -> dt.datetime:
    with connection.cursor() as cursor:
        cursor.execute("SELECT CURRENT_TIMESTAMP")
        value = cursor.fetchone()[0]
    if isinstance(value, str):  # SQLite
        value = dt.datetime.fromisoformat(value)
    return value if timezone.is_aware(value) else timezone.make_aware(value, dt.UTC)


@pytest.fixture(params=[-HOUR, HOUR], ids=["worker-clock-behind", "worker-clock-ahead"])
def skewed_clock(request, monkeypatch):
    real_now = timezone.now
    monkeypatch.setattr(timezone, "now", lambda: real_now() + request.param)
    return request.param


def test_a_run_heartbeating_from_a_skewed_worker_is_not_lost(make_run, skewed_clock, settings):
    settings.LOST_AFTER_SECONDS = 60
    run = transitions.claim_for_launch(make_run().id, "skewed-worker")
    assert transitions.heartbeat(run.id, run.attempt)
    assert transitions.record_progress(run.id, run.attempt, transitions.Progress(offset=10, step=1))
    run.refresh_from_db()
    reference = db_now()
    for stamp in (run.heartbeat_at, run.started_at):
        assert abs(stamp - reference) < dt.timedelta(seconds=30), (stamp, reference)
    assert sweep_lost_runs() == []
    run.refresh_from_db()
    assert run.status == RunStatus.STARTING


def test_the_sweep_measures_silence_on_the_database_clock(make_run, skewed_clock, settings):
    settings.LOST_AFTER_SECONDS = 60
    run = transitions.claim_for_launch(make_run().id, "silent-worker")
    Run.objects.filter(pk=run.pk).update(heartbeat_at=db_now() - dt.timedelta(seconds=120))
    assert sweep_lost_runs() == [run.id]
    run.refresh_from_db()
    assert run.status == RunStatus.LOST
    assert abs(run.finished_at - db_now()) < dt.timedelta(seconds=30)


def test_an_eval_job_heartbeating_from_a_skewed_worker_is_not_failed(project, skewed_clock):
    job = EvalJob.objects.create(project=project, source=ModelSource.HF, hf_path="m", tasks=["t"])
    job = eval_transitions.JOBS.claim(job.id, "skewed-worker")
    assert job is not None
    assert eval_transitions.record_progress(job.id, 0.5, "t") is False
    job.refresh_from_db()
    assert abs(job.heartbeat_at - db_now()) < dt.timedelta(seconds=30)
    assert eval_transitions.JOBS.fail_stale_jobs(60) == []
    EvalJob.objects.filter(pk=job.pk).update(heartbeat_at=db_now() - dt.timedelta(seconds=120))
    assert eval_transitions.JOBS.fail_stale_jobs(60) == [job.id]
    job.refresh_from_db()
    assert job.status == EvalStatus.FAILED
