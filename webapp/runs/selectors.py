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
