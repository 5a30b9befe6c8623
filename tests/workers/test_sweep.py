"""Runs whose supervisor went silent are marked lost; live ones are left alone."""

from __future__ import annotations

import datetime as dt

from django.utils import timezone

from webapp.runs import transitions
from webapp.runs.models import RunStatus
from workers.tasks import sweep_lost_runs


def test_sweep_marks_runs_with_a_stale_heartbeat_lost(make_run, settings):
    settings.LOST_AFTER_SECONDS = 60
    now = timezone.now()
    stale = make_run(
        "stale",
        status=RunStatus.RUNNING,
        heartbeat_at=now - dt.timedelta(seconds=90),
        worker="gpu-7",
        attempt=1,
    )
    starting = make_run(
        "starting",
        status=RunStatus.STARTING,
        heartbeat_at=None,
        started_at=now - dt.timedelta(seconds=120),
        attempt=1,
    )
    fresh = make_run(
        "fresh", status=RunStatus.RUNNING, heartbeat_at=now - dt.timedelta(seconds=10), attempt=1
    )
    queued = make_run("queued", status=RunStatus.QUEUED)
    done = make_run("done", status=RunStatus.COMPLETED, heartbeat_at=now - dt.timedelta(days=1))

    # The task's own function, run here: the schedule and a real worker are exercised elsewhere.
    assert sorted(sweep_lost_runs()) == sorted([stale.id, starting.id])

    for run in (stale, starting, fresh, queued, done):
        run.refresh_from_db()
    assert stale.status == starting.status == RunStatus.LOST
    assert "no heartbeat from worker gpu-7 for more than 60 s" in stale.error
    assert "resume" in stale.error and stale.finished_at is not None
    assert (fresh.status, queued.status, done.status) == (
        RunStatus.RUNNING,
        RunStatus.QUEUED,
        RunStatus.COMPLETED,
    )
    assert sweep_lost_runs() == []  # idempotent


def test_a_lost_run_refuses_heartbeats_until_its_own_supervisor_takes_it_back(make_run):
    run = transitions.claim_for_launch(make_run().id, "w1")
    assert transitions.heartbeat(run.id, run.attempt)
    transitions.mark_lost_runs(dt.timedelta(seconds=0), now=timezone.now() + dt.timedelta(seconds=1))
    assert not transitions.heartbeat(run.id, run.attempt)
    assert not transitions.revive(run.id, run.attempt + 1)  # another attempt's supervisor
    assert transitions.revive(run.id, run.attempt)
    assert transitions.heartbeat(run.id, run.attempt)
    run.refresh_from_db()
    assert (run.status, run.error, run.finished_at) == (RunStatus.RUNNING, "", None)


def test_beat_schedules_the_sweep_often_and_with_a_time_limit():
    from workers import app

    entry = app.conf.beat_schedule["sweep-lost-runs"]
    assert entry["task"] == "workers.tasks.sweep_lost_runs" and entry["schedule"] <= 30
    assert sweep_lost_runs.time_limit and sweep_lost_runs.soft_time_limit
