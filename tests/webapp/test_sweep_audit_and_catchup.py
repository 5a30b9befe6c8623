"""A sweep's life in the team's audit log, and the beat that advances a sweep whose trigger was lost."""

from __future__ import annotations

import pytest
from django.urls import reverse

from modelcore.config import ConfigError
from webapp.audit.models import Action, AuditEvent
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from webapp.sweeps.models import Sweep, SweepStatus
from webapp.sweeps.services import cancel_sweep, create_sweep
from workers import app
from workers.tasks import advance_sweeps

GRID = {"optim.lr": {"values": [1e-3, 3e-3]}}


def spec(**fields):
    return {"preset": "tiny-cpu", "method": "grid", "parameters": GRID, "concurrency": 1, **fields}


def runs_of(sweep: Sweep) -> list[Run]:
    return list(Run.objects.filter(sweep=sweep).order_by("id"))


def finish(run: Run, status: str = RunStatus.COMPLETED) -> None:
    """A worker claims, starts and ends the run (its commit callbacks run only where the caller says)."""
    claimed = transitions.claim_for_launch(run.id, "worker-1")
    assert claimed is not None
    transitions.record_progress(run.id, claimed.attempt, transitions.Progress(offset=1, step=1, running=True))
    assert transitions.finish(run.id, claimed.attempt, status)


def events(sweep: Sweep) -> list[tuple[str, str]]:
    rows = AuditEvent.objects.filter(target_type="sweep", target_id=str(sweep.pk)).order_by("id")
    return [(e.action, e.actor_label) for e in rows]


def test_creating_and_cancelling_a_sweep_are_audited_with_the_person(
    alice, project, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec(name="lr search"))
        cancel_sweep(user=alice, sweep=sweep)
        cancel_sweep(user=alice, sweep=sweep)  # already over: a no-op, not a second entry
    assert events(sweep) == [(Action.SWEEP_CREATED, "alice"), (Action.SWEEP_CANCELLED, "alice")]
    created = AuditEvent.objects.get(action=Action.SWEEP_CREATED)
    assert created.team_id == project.team_id and created.target_label == "lr search"
    assert created.details == {"project": project.name, "method": "grid", "budget": 2}


def test_a_refused_sweep_leaves_no_entry(alice, project, sent_tasks):
    bad = spec(parameters={"optim.lr": {"values": [-1.0]}})
    with pytest.raises(ConfigError):
        create_sweep(user=alice, project=project, spec=bad)
    assert not AuditEvent.objects.filter(action=Action.SWEEP_CREATED).exists()


def test_completion_is_audited_once_without_a_person_and_shows_in_the_team_log(
    alice, project, client_for, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec(name="to the end"))
    for _ in range(2):
        with django_capture_on_commit_callbacks(execute=True):
            finish(runs_of(sweep)[-1])
    sweep.refresh_from_db()
    assert sweep.status == SweepStatus.COMPLETED
    advance_sweeps()  # a later catch-up finds it over: no second entry
    assert events(sweep) == [(Action.SWEEP_CREATED, "alice"), (Action.SWEEP_COMPLETED, "")]
    page = client_for(alice).get(reverse("accounts:team_audit", args=[project.team_id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "Sweep created" in html and "Sweep completed" in html and "to the end" in html


def test_the_beat_advances_a_sweep_whose_run_changed_signal_was_lost(
    alice, project, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=spec())
    (first,) = runs_of(sweep)
    # The run ends but its commit callbacks never run: the worker died between commit and signal.
    with django_capture_on_commit_callbacks(execute=False):
        finish(first)
    assert len(runs_of(sweep)) == 1  # stalled: nothing else would launch the second trial
    with django_capture_on_commit_callbacks(execute=True):
        launched = advance_sweeps()
    runs = runs_of(sweep)
    assert len(runs) == 2 and launched == [runs[1].id]
    assert runs[1].status == RunStatus.QUEUED
    assert ("workers.tasks.launch_run", (runs[1].id,)) in [(n, a) for n, a, _ in sent_tasks]
    # Idempotent: with the slot taken again, more beats launch nothing.
    assert advance_sweeps() == [] and advance_sweeps() == []
    assert len(runs_of(sweep)) == 2


def test_the_catch_up_is_on_the_beat_schedule_with_a_time_limit():
    entry = app.conf.beat_schedule["advance-sweeps"]
    assert entry["task"] == "workers.tasks.advance_sweeps" == advance_sweeps.name
    assert entry["schedule"] <= 60 and entry["options"]["expires"] < entry["schedule"]
    assert advance_sweeps.time_limit and advance_sweeps.soft_time_limit
