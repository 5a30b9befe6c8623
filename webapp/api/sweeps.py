"""Sweeps over the API: start one on a project, list them, follow one, cancel one.

The body of ``POST /projects/<id>/sweeps`` is the spec the web form builds: ``preset``,
``config`` (partial, laid over the preset), ``method`` (grid | random), ``parameters``
(``{"optim.lr": {"min": 1e-4, "max": 1e-2, "scale": "log"}, "model.n_layers": {"values":
[2, 4]}}``), ``budget``, ``concurrency``, ``seed``, ``metric``, ``goal`` (min | max) and
optionally ``halving_step`` and ``halving_eta``. A bad field is a 400 naming it.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from webapp.api.auth import api_view
from webapp.api.body import json_object
from webapp.projects.selectors import project_for
from webapp.sweeps.presenters import sweep_detail, sweep_summary
from webapp.sweeps.selectors import sweep_for, sweeps_of_project
from webapp.sweeps.services import SPEC_FIELDS, cancel_sweep, create_sweep


@api_view(("GET", "POST"))
def project_sweeps(request: HttpRequest, project_id: int) -> JsonResponse:
    project = project_for(request.user, project_id)
    if request.method == "GET":
        return JsonResponse({"sweeps": [sweep_summary(s) for s in sweeps_of_project(request.user, project)]})
    spec = json_object(request, SPEC_FIELDS)
    sweep = create_sweep(user=request.user, project=project, spec=spec)
    return JsonResponse(sweep_detail(sweep), status=201)


@api_view(("GET",))
def sweep(request: HttpRequest, sweep_id: int) -> JsonResponse:
    return JsonResponse(sweep_detail(sweep_for(request.user, sweep_id)))


@api_view(("POST",))
def sweep_cancel(request: HttpRequest, sweep_id: int) -> JsonResponse:
    found = sweep_for(request.user, sweep_id)  # another team's sweep is a 404 whatever the body
    json_object(request, ())
    return JsonResponse(sweep_detail(cancel_sweep(user=request.user, sweep=found)))
