"""Ingested progress drives a run's sweep (halving) with the sweep the supervisor's run already
names: run_changed carries it, so a batch costs no read of the run's sweep."""

from __future__ import annotations

from django.db import connection

from modelcore.events import EVENTS_FILE, EventWriter
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import Run
from webapp.sweeps.models import RungResult
from webapp.sweeps.services import create_sweep
from workers import ingest

HALVING = {
    "preset": "tiny-cpu",
    "method": "grid",
    "parameters": {"optim.lr": {"values": [1e-3, 2e-3]}},
    "concurrency": 2,
    "halving_step": 10,
    "halving_eta": 2,
    "metric": "val/loss",
}


def test_ingested_progress_halves_the_sweep_without_reading_the_runs_sweep(
    alice, team, settings, tmp_path, sent_tasks, django_capture_on_commit_callbacks
):
    settings.RUNS_DIR = tmp_path
    project = Project.objects.create(team=team, name="sweeps", created_by=alice)
    with django_capture_on_commit_callbacks(execute=True):
        sweep = create_sweep(user=alice, project=project, spec=HALVING)
    runs = list(Run.objects.filter(sweep=sweep).order_by("id"))
    sweep_reads: list[str] = []

    def keep_sweep_reads(execute, sql, params, many, context):
        if sql.startswith('SELECT "runs_run"."sweep_id" AS "sweep_id" FROM "runs_run"'):
            sweep_reads.append(sql)
        return execute(sql, params, many, context)

    for run, loss in zip(runs, [1.0, 3.0], strict=True):
        claimed = transitions.claim_for_launch(run.id, "worker-1")
        with EventWriter(claimed.run_dir) as events:
            events.status("running")
            events.metric(10, {"val/loss": loss})
            events.metric(12, {"train/loss": 2.0})
        with connection.execute_wrapper(keep_sweep_reads), django_capture_on_commit_callbacks(execute=True):
            batch = ingest.ingest_new_events(claimed, claimed.run_dir / EVENTS_FILE)
        assert batch is not None and batch.step == 12
    assert {r.run_id: (r.value, r.kept) for r in RungResult.objects.all()} == {
        runs[0].id: (1.0, True),
        runs[1].id: (3.0, False),
    }
    assert Run.objects.get(pk=runs[1].pk).cancel_requested
    assert sweep_reads == []
