"""Runs as one user may see them."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from webapp.projects.models import Project
from webapp.projects.selectors import projects_visible_to
from webapp.runs.models import Run, RunLog, RunSample


def runs_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Run]:
    return Run.objects.filter(project__in=projects_visible_to(user)).select_related(
        "project", "project__team"
    )


def run_for(user: AbstractBaseUser | AnonymousUser, run_id: int) -> Run:
    """The run if ``user`` may see it; another team's run raises Http404."""
    run = runs_visible_to(user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    return run


def project_runs(
    user: AbstractBaseUser | AnonymousUser, project: Project, *, include_archived: bool = False
) -> QuerySet[Run]:
    """The project's runs ``user`` sees, newest first; archived ones only when asked for.

    The runs table and the API list filter this further (``webapp.runs.filters``).
    """
    runs = runs_visible_to(user).filter(project=project)
    if not include_archived:
        runs = runs.filter(archived=False)
    return runs.order_by("-created_at", "-id")


def runs_of_project(
    user: AbstractBaseUser | AnonymousUser, project: Project, limit: int = 200
) -> QuerySet[Run]:
    return project_runs(user, project)[:limit]


def log_tail(run: Run, limit: int = 200) -> list[RunLog]:
    """The last ``limit`` log lines, oldest first."""
    return list(reversed(RunLog.objects.filter(run=run).order_by("-seq")[:limit]))


def samples_table(run: Run, last_steps: int = 8) -> dict[str, Any]:
    """The run's samples as a table: a row per prompt, a column per step (the last ``last_steps``).

    ``{"steps": [10, 20], "rows": [{"prompt": "def ", "texts": ["…", "…"]}]}``; a cell is ""
    where that step has no text for that prompt (a prompt added by a restart).
    """
    steps = list(
        RunSample.objects.filter(run=run)
        .values_list("step", flat=True)
        .distinct()
        .order_by("-step")[:last_steps]
    )
    steps.reverse()
    cells: dict[tuple[int, int], str] = {}
    prompts: dict[int, str] = {}
    for step, index, prompt, text in RunSample.objects.filter(run=run, step__in=steps).values_list(
        "step", "index", "prompt", "text"
    ):
        cells[(index, step)] = text
        prompts[index] = prompt  # the latest step's wording wins (ordered by step)
    rows = [
        {"prompt": prompts[i], "texts": [cells.get((i, step), "") for step in steps]} for i in sorted(prompts)
    ]
    return {"steps": steps, "rows": rows}
