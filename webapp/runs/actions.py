"""The run page's actions on an ended run: resume, restart, archive, delete (issue 11).

Each is a POST from a button of the run page's header (``templates/runs/_actions.html``);
the services check the role and the state, a refusal comes back as a message on the
run page. Deleting asks first: ``GET runs/<id>/delete`` is the confirmation page.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role, require_role
from webapp.input_errors import InputError
from webapp.runs.models import ACTIVE_STATUSES, RESUMABLE_STATUSES, Run, RunSource
from webapp.runs.selectors import run_for
from webapp.runs.services import delete_run, restart_run, resume_run, set_archived


def available_actions(user: AbstractBaseUser | AnonymousUser, run: Run) -> dict[str, Any]:
    """Which of the header's buttons ``user`` gets on this run's page."""
    member = has_role(user, run.project.team_id, Role.MEMBER)
    ended = run.status in RESUMABLE_STATUSES and run.source == RunSource.MANAGED
    latest = run.checkpoints.order_by("-step").values_list("step", flat=True).first() if ended else None
    return {
        "resume": member and ended and latest is not None,
        "restart": member and ended and latest is None,
        "latest_checkpoint": latest,
        "clone": member and run.source == RunSource.MANAGED,
        "archive": member,
        "delete": has_role(user, run.project.team_id, Role.ADMIN) and run.status not in ACTIVE_STATUSES,
    }


@login_required
@require_POST
def resume(request: HttpRequest, run_id: int) -> HttpResponse:
    return _start_again(
        request, run_id, resume_run, "Resumed: a new attempt starts from the latest checkpoint."
    )


@login_required
@require_POST
def restart(request: HttpRequest, run_id: int) -> HttpResponse:
    return _start_again(
        request, run_id, restart_run, "Restarted: a new attempt trains the run again from step 0."
    )


def _start_again(request: HttpRequest, run_id: int, start: Callable[..., Run], done: str) -> HttpResponse:
    """A new attempt of the run (``start``: resume or restart), or the reason it cannot have one."""
    run = run_for(request.user, run_id)
    try:
        start(user=request.user, run=run)
        messages.success(request, done)
    except InputError as exc:
        messages.error(request, " ".join(exc.errors.values()))
    return redirect("runs:detail", run_id=run.id)


@login_required
@require_POST
def archive(request: HttpRequest, run_id: int) -> HttpResponse:
    run = set_archived(user=request.user, run=run_for(request.user, run_id), archived=True)
    messages.success(request, "Archived: the run is hidden from the project's run list.")
    return redirect("runs:detail", run_id=run.id)


@login_required
@require_POST
def unarchive(request: HttpRequest, run_id: int) -> HttpResponse:
    run = set_archived(user=request.user, run=run_for(request.user, run_id), archived=False)
    messages.success(request, "Unarchived: the run is back in the project's run list.")
    return redirect("runs:detail", run_id=run.id)


@login_required
@require_http_methods(["GET", "POST"])
def delete(request: HttpRequest, run_id: int) -> HttpResponse:
    """GET: the confirmation page; POST: delete the run and its files (team admins)."""
    run = run_for(request.user, run_id)
    require_role(request.user, run.project.team_id, Role.ADMIN)
    if request.method == "GET":
        return render(request, "runs/delete.html", {"run": run, "active": run.status in ACTIVE_STATUSES})
    try:
        delete_run(user=request.user, run=run)
    except InputError as exc:
        messages.error(request, " ".join(exc.errors.values()))
        return redirect("runs:detail", run_id=run.id)
    messages.success(request, f"Deleted run {run.name!r} and its files.")
    return redirect("projects:detail", run.project_id)
