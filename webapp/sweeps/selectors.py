"""Sweeps as one user may see them (another team's sweep is a 404), and a sweep's table of trials."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import OuterRef, QuerySet, Subquery
from django.http import Http404

from webapp.metrics.models import MetricPoint
from webapp.projects.models import Project
from webapp.projects.selectors import projects_visible_to
from webapp.runs.models import Run
from webapp.sweeps.models import Sweep


def sweeps_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Sweep]:
    return Sweep.objects.filter(project__in=projects_visible_to(user)).select_related("project", "created_by")


def sweeps_of_project(user: AbstractBaseUser | AnonymousUser, project: Project) -> QuerySet[Sweep]:
    return sweeps_visible_to(user).filter(project=project)


def sweep_for(user: AbstractBaseUser | AnonymousUser, sweep_id: int) -> Sweep:
    """The sweep if ``user`` may see its project; another team's sweep raises Http404."""
    sweep = sweeps_visible_to(user).filter(pk=sweep_id).first()
    if sweep is None:
        raise Http404("No such sweep.")
    return sweep


def sweep_trials(sweep: Sweep) -> list[dict[str, Any]]:
    """One row per trial, in launch order: its field values, its run (if launched) and the metric.

    The metric is the run's latest logged value of ``sweep.metric`` (one query for all runs);
    ``halted`` says whether successive halving stopped it at the rung.
    """
    latest = MetricPoint.objects.filter(run=OuterRef("pk"), key=sweep.metric, value__isnull=False).order_by(
        "-step"
    )
    runs = {
        run.pk: run
        for run in Run.objects.filter(sweep=sweep)
        .annotate(metric_value=Subquery(latest.values("value")[:1]))
        .select_related("rung_result")
    }
    rows = []
    for index, trial in enumerate(sweep.trials):
        run = runs.get(sweep.run_ids[index]) if index < len(sweep.run_ids) else None
        rung = getattr(run, "rung_result", None) if run is not None else None
        rows.append(
            {
                "trial": index + 1,
                "values": trial,
                "run_id": run.pk if run else None,
                "run_name": run.name if run else "",
                "status": run.status if run else ("deleted" if index < len(sweep.run_ids) else "pending"),
                "step": run.step if run else 0,
                "metric": run.metric_value if run else None,
                "rung_value": rung.value if rung else None,
                "halted": bool(rung and not rung.kept),
            }
        )
    return rows
