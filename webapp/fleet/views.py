"""The Fleet page: hosts, their GPUs and what holds them, utilisation, the queue; operators set quotas."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.models import Team
from webapp.fleet import selectors, services
from webapp.fleet.stream import CHART_HOURS, chart_hours, fleet_state
from webapp.input_errors import InputError, input_errors_as_json
from webapp.runs.assets import plotly_js_url


@login_required
@require_GET
def fleet(request: HttpRequest) -> HttpResponse:
    hours = chart_hours(request.GET.get("hours"))
    return render(
        request,
        "fleet/fleet.html",
        {
            "hosts": selectors.fleet_for(request.user),
            "queue": selectors.queue_for(request.user),
            "charts": selectors.utilisation_for(hours),
            "hours": hours,
            "hour_choices": CHART_HOURS,
            "quotas": selectors.quotas() if request.user.is_staff else None,
            "plotly_url": plotly_js_url(),
        },
    )


@login_required
@require_GET
@input_errors_as_json
def data(request: HttpRequest) -> JsonResponse:
    """What the Fleet page polls where its stream cannot be held: the state the stream sends."""
    return JsonResponse(fleet_state(request.user, chart_hours(request.GET.get("hours"))))


@login_required
@require_POST
def set_quota(request: HttpRequest, team_id: int) -> HttpResponse:
    if not request.user.is_staff:
        raise PermissionDenied("Only an operator (staff account) may set team quotas.")
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise Http404("No such team.")
    try:
        services.set_team_quota(actor=request.user, team=team, max_gpus=request.POST.get("max_gpus", ""))
    except InputError as exc:
        messages.error(request, f"{team.name}: {exc.errors.get('max_gpus', exc)}")
    else:
        messages.success(request, f"Quota of {team.name} saved.")
    return redirect("fleet:fleet")
