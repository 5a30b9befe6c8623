"""Tags and the note of a run over the API (members write, viewers read).

``GET /api/v1/runs/<id>/tags`` → ``{"id", "tags"}``; ``POST`` with ``{"tags": ["a", "b"]}`` adds
them, ``DELETE`` with the same body (or ``?tag=a&tag=b``) removes them; both answer the
run's tags. ``GET /api/v1/runs/<id>/note`` → ``{"text", "html", "author", "updated_at",
"history"}``; ``POST`` with ``{"text": "markdown"}`` saves a new version.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.annotations.selectors import note_of
from webapp.annotations.services import add_tags, remove_tags, run_tags, save_note
from webapp.api.auth import api_view
from webapp.api.body import json_object
from webapp.input_errors import InputError
from webapp.runs.selectors import run_for


@api_view(("GET", "POST", "DELETE"))
def tags(request: HttpRequest, run_id: int) -> JsonResponse:
    run = run_for(request.user, run_id)  # another team's run is a 404 whatever the body
    if request.method == "GET":
        return JsonResponse({"id": run.id, "tags": run_tags(run)})
    require_role(request.user, run.project.team_id, Role.MEMBER)
    data = json_object(request, ("tags",))
    names = data.get("tags")
    if names is None and request.method == "DELETE":
        names = request.GET.getlist("tag") or None
    if names is None:
        raise InputError({"tags": 'required: a list of tags, e.g. {"tags": ["baseline"]}'})
    if not isinstance(names, list):
        raise InputError({"tags": 'a list of tags, e.g. {"tags": ["baseline"]}'})
    if request.method == "POST":
        return JsonResponse({"id": run.id, "tags": add_tags(user=request.user, run=run, names=names)})
    return JsonResponse({"id": run.id, "tags": remove_tags(user=request.user, run=run, names=names)})


@api_view(("GET", "POST"))
def note(request: HttpRequest, run_id: int) -> JsonResponse:
    run = run_for(request.user, run_id)
    if request.method == "POST":
        require_role(request.user, run.project.team_id, Role.MEMBER)
        data = json_object(request, ("text",))
        if "text" not in data:
            raise InputError({"text": 'required: the note in markdown, e.g. {"text": "**why** this run"}'})
        save_note(user=request.user, run=run, text=data["text"])
    return JsonResponse({"id": run.id, **note_of(run)})
