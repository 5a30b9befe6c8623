"""Starting an ended run again, archiving and deleting runs over the API (issue 11).

``POST runs/<id>/resume`` (member), ``POST runs/<id>/restart`` (member), ``POST
runs/<id>/archive`` and ``unarchive`` (member); ``DELETE runs/<id>`` (admin) is answered
by ``delete`` through the run's own route (``webapp.api.views.run``). Another team's run
is a 404 whatever the body; a too-low role a 403 naming the role.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from webapp.api.auth import api_view
from webapp.api.body import json_object
from webapp.runs.models import Run
from webapp.runs.selectors import run_for
from webapp.runs.services import delete_run, restart_run, resume_run, set_archived


def _state(run: Run) -> dict:
    return {"id": run.id, "status": run.status, "attempt": run.attempt, "archived": run.archived}


@api_view(("POST",))
def run_resume(request: HttpRequest, run_id: int) -> JsonResponse:
    """A new attempt from the run's latest checkpoint; 400 naming ``checkpoint`` when it has none."""
    found = run_for(request.user, run_id)
    json_object(request, ())
    return JsonResponse(_state(resume_run(user=request.user, run=found)), status=202)


@api_view(("POST",))
def run_restart(request: HttpRequest, run_id: int) -> JsonResponse:
    """A new attempt from step 0 of a run that has no checkpoint."""
    found = run_for(request.user, run_id)
    json_object(request, ())
    return JsonResponse(_state(restart_run(user=request.user, run=found)), status=202)


@api_view(("POST",))
def run_archive(request: HttpRequest, run_id: int) -> JsonResponse:
    found = run_for(request.user, run_id)
    json_object(request, ())
    return JsonResponse(_state(set_archived(user=request.user, run=found, archived=True)))


@api_view(("POST",))
def run_unarchive(request: HttpRequest, run_id: int) -> JsonResponse:
    found = run_for(request.user, run_id)
    json_object(request, ())
    return JsonResponse(_state(set_archived(user=request.user, run=found, archived=False)))


def delete(request: HttpRequest, run_id: int) -> HttpResponse:
    """``DELETE runs/<id>``: the run, its rows and its directory; refused while it is active.

    204 and no body, as the API's other deletes (invites, tokens).
    """
    found = run_for(request.user, run_id)
    delete_run(user=request.user, run=found)
    return HttpResponse(status=204)
