"""Starting an ended run again and archiving runs over the API (issue 11).

``POST runs/<id>/resume`` (member), ``POST runs/<id>/restart`` (member), ``POST
runs/<id>/archive`` and ``unarchive`` (member); ``DELETE runs/<id>`` (admin) is in
``webapp.api.views``. Another team's run is a 404 whatever the body; a too-low role a 403
naming the role.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema, Status

from webapp.api.auth import ApiAuth
from webapp.api.lookups import run_of
from webapp.api.schemas import NoFields, answers
from webapp.runs.models import Run
from webapp.runs.services import restart_run, resume_run, set_archived

router = Router(tags=["projects and runs"])
BY_RUN = ApiAuth(guard=run_of)


class RunAttemptState(Schema):
    id: int
    status: str
    attempt: int
    archived: bool


def _state(run: Run) -> dict[str, Any]:
    return {"id": run.id, "status": run.status, "attempt": run.attempt, "archived": run.archived}


@router.post(
    "runs/{int:run_id}/resume", response=answers({202: RunAttemptState}), url_name="run_resume", auth=BY_RUN
)
def run_resume(request: HttpRequest, run_id: int, payload: NoFields | None = None) -> Status:
    """A new attempt from the run's latest checkpoint; 400 naming ``checkpoint`` when it has none."""
    return Status(202, _state(resume_run(user=request.user, run=run_of(request, run_id))))


@router.post(
    "runs/{int:run_id}/restart", response=answers({202: RunAttemptState}), url_name="run_restart", auth=BY_RUN
)
def run_restart(request: HttpRequest, run_id: int, payload: NoFields | None = None) -> Status:
    """A new attempt from step 0 of a run that has no checkpoint."""
    return Status(202, _state(restart_run(user=request.user, run=run_of(request, run_id))))


@router.post(
    "runs/{int:run_id}/archive", response=answers({200: RunAttemptState}), url_name="run_archive", auth=BY_RUN
)
def run_archive(request: HttpRequest, run_id: int, payload: NoFields | None = None) -> dict[str, Any]:
    """Hide the run from the default runs list."""
    return _state(set_archived(user=request.user, run=run_of(request, run_id), archived=True))


@router.post(
    "runs/{int:run_id}/unarchive",
    response=answers({200: RunAttemptState}),
    url_name="run_unarchive",
    auth=BY_RUN,
)
def run_unarchive(request: HttpRequest, run_id: int, payload: NoFields | None = None) -> dict[str, Any]:
    return _state(set_archived(user=request.user, run=run_of(request, run_id), archived=False))
