"""What a path names, looked up once per request for the caller: the routers' guards.

``ApiAuth`` runs an operation's guard right after the token (``webapp.api.auth``), before
ninja reads the query or the body, so another team's object is a 404 and a too-low role a
403 whatever the request carries. The view then gets the same object from the request's
cache instead of a second query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.http import HttpRequest

from webapp.accounts.models import Role, Team
from webapp.accounts.permissions import require_role
from webapp.accounts.selectors import team_for
from webapp.evals.models import EvalJob
from webapp.evals.selectors import eval_job_for
from webapp.external import services as external
from webapp.projects.models import Project
from webapp.projects.selectors import project_for
from webapp.runs.models import Run
from webapp.runs.selectors import run_for
from webapp.samples.models import SampleJob
from webapp.samples.selectors import sample_job_for
from webapp.sweeps.models import Sweep
from webapp.sweeps.selectors import sweep_for

T = TypeVar("T")


def _cached(request: HttpRequest, kind: str, pk: int, find: Callable[[Any, int], T]) -> T:
    cache: dict[tuple[str, int], Any] = request.__dict__.setdefault("_api_objects", {})
    if (kind, pk) not in cache:
        cache[(kind, pk)] = find(request.user, pk)
    return cache[(kind, pk)]


def project_of(request: HttpRequest, project_id: int, **_: Any) -> Project:
    return _cached(request, "project", project_id, project_for)


def project_member(request: HttpRequest, project_id: int, **_: Any) -> Project:
    """The project, once the caller may write in it (a viewer's 403 says which role it needs)."""
    found = project_of(request, project_id)
    require_role(request.user, found.team_id, Role.MEMBER)
    return found


def run_of(request: HttpRequest, run_id: int, **_: Any) -> Run:
    return _cached(request, "run", run_id, run_for)


def run_member(request: HttpRequest, run_id: int, **_: Any) -> Run:
    found = run_of(request, run_id)
    require_role(request.user, found.project.team_id, Role.MEMBER)
    return found


def run_writer(request: HttpRequest, run_id: int, **_: Any) -> Run:
    """An external run its client may write to: 404 for another team's, 403 for a viewer."""
    found = run_of(request, run_id)
    external.require_writer(request.user, found)
    return found


def team_of(request: HttpRequest, team_id: int, **_: Any) -> Team:
    return _cached(request, "team", team_id, team_for)


def team_admin(request: HttpRequest, team_id: int, **_: Any) -> Team:
    found = team_of(request, team_id)
    require_role(request.user, found.id, Role.ADMIN)
    return found


def eval_job_of(request: HttpRequest, job_id: int, **_: Any) -> EvalJob:
    return _cached(request, "eval", job_id, eval_job_for)


def sweep_of(request: HttpRequest, sweep_id: int, **_: Any) -> Sweep:
    return _cached(request, "sweep", sweep_id, sweep_for)


def sample_job_of(request: HttpRequest, job_id: int, **_: Any) -> SampleJob:
    return _cached(request, "sample", job_id, sample_job_for)
