"""The run page's and the runs table's tag and note edits (members; a viewer gets a 403)."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.views.decorators.http import require_POST

from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.annotations.services import add_tags, remove_tags, save_note
from webapp.input_errors import InputError, input_errors_as_json
from webapp.runs.selectors import run_for


@login_required
@require_POST
@input_errors_as_json
def run_tags(request: HttpRequest, run_id: int) -> JsonResponse:
    """``add=TAG`` or ``remove=TAG`` (either may repeat); answers the run's tags."""
    run = run_for(request.user, run_id)
    require_role(request.user, run.project.team_id, Role.MEMBER)  # before the input: a viewer learns the role
    added, removed = request.POST.getlist("add"), request.POST.getlist("remove")
    if not added and not removed:
        raise InputError({"add": "name a tag to add (add=...) or to remove (remove=...)"})
    tags: list[str] = []
    if added:
        tags = add_tags(user=request.user, run=run, names=added)
    if removed:
        tags = remove_tags(user=request.user, run=run, names=removed)
    return JsonResponse({"id": run.id, "tags": tags})


@login_required
@require_POST
def run_note(request: HttpRequest, run_id: int) -> HttpResponse:
    run = run_for(request.user, run_id)
    try:
        save_note(user=request.user, run=run, text=request.POST.get("text", ""))
    except InputError as exc:
        messages.error(request, f"The note was not saved: {exc}")
        return redirect("runs:detail", run_id=run.id)
    messages.success(request, "Note saved.")
    return redirect("runs:detail", run_id=run.id)
