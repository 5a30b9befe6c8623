"""Sweep pages: a project's sweeps, the new-sweep form, a sweep (plot and table), its JSON, cancel."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role, require_role
from webapp.projects.selectors import project_for
from webapp.runs.assets import plotly_js_url
from webapp.sweeps.forms import SweepForm
from webapp.sweeps.presenters import sweep_detail
from webapp.sweeps.selectors import sweep_for, sweeps_of_project
from webapp.sweeps.services import cancel_sweep, create_sweep


@login_required
@require_GET
def project_sweeps(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    return render(
        request,
        "sweeps/list.html",
        {
            "project": project,
            "sweeps": sweeps_of_project(request.user, project),
            "can_launch": has_role(request.user, project.team_id, Role.MEMBER),
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def new_sweep(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    require_role(request.user, project.team_id, Role.MEMBER)
    status = 200
    if request.method == "POST":
        form = SweepForm(request.POST)
        if form.is_valid():
            sweep = form.submit(create_sweep, user=request.user, project=project, spec=form.spec())
            if sweep is not None:
                return redirect("sweeps:detail", sweep_id=sweep.id)
        status = 400
    else:
        form = SweepForm()
    return render(request, "sweeps/new.html", {"project": project, "form": form}, status=status)


@login_required
@require_GET
def detail(request: HttpRequest, sweep_id: int) -> HttpResponse:
    sweep = sweep_for(request.user, sweep_id)
    return render(
        request,
        "sweeps/detail.html",
        {
            "sweep": sweep,
            "project": sweep.project,
            "state": sweep_detail(sweep),
            "can_cancel": sweep.status == "running"
            and has_role(request.user, sweep.project.team_id, Role.MEMBER),
            "plotly_url": plotly_js_url("full"),  # parallel coordinates: not in the basic bundle
        },
    )


@login_required
@require_GET
def data(request: HttpRequest, sweep_id: int) -> JsonResponse:
    """What the sweep page polls: the sweep and its trials, with each run's metric."""
    return JsonResponse(sweep_detail(sweep_for(request.user, sweep_id)))


@login_required
@require_POST
def cancel(request: HttpRequest, sweep_id: int) -> HttpResponse:
    # A viewer's PermissionDenied is a 403 page naming the role it takes (they see no button).
    sweep = cancel_sweep(user=request.user, sweep=sweep_for(request.user, sweep_id))
    messages.info(request, f"The sweep is {sweep.status}; its active runs were asked to stop.")
    return redirect("sweeps:detail", sweep_id=sweep.id)
