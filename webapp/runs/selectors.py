"""Runs as one user may see them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from webapp.projects.models import Project
from webapp.projects.selectors import projects_visible_to
from webapp.runs.models import Run, RunLog


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


def runs_of_project(
    user: AbstractBaseUser | AnonymousUser, project: Project, limit: int = 200
) -> QuerySet[Run]:
    return runs_visible_to(user).filter(project=project).order_by("-created_at", "-id")[:limit]


def log_tail(run: Run, limit: int = 200) -> list[RunLog]:
    """The last ``limit`` log lines, oldest first."""
    return list(reversed(RunLog.objects.filter(run=run).order_by("-seq")[:limit]))
