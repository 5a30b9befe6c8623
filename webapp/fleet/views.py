"""The Fleet page: hosts, their GPUs and what holds them, utilisation, the queue; operators set quotas."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_GET, require_POST

from webapp.accounts.models import Team
from webapp.fleet import selectors, services
from webapp.input_errors import InputError
from webapp.runs.assets import plotly_js_url
from webapp.whole_numbers import parse_whole_number

CHART_HOURS = (1, 6, 24)


@login_required
@require_GET
def fleet(request: HttpRequest) -> HttpResponse:
    hours = parse_whole_number(request.GET.get("hours", "6"))
    if hours is None or not 1 <= hours <= 24:
        raise InputError({"hours": "must be a whole number of hours from 1 to 24"})
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
