"""Projects, runs and metrics over the API (paths are stable: operators and tests use them).

Eval jobs are in ``webapp.api.evals``.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from modelcore.config import resolve
from webapp.accounts.selectors import teams_of
from webapp.api import external
from webapp.api.auth import api_view
from webapp.api.body import json_object
from webapp.api.fields import string, whole_number
from webapp.api.run_actions import delete as delete_run_api
from webapp.external.batches import read_tags
from webapp.external.services import create_external_run
from webapp.input_errors import InputError, error_body
from webapp.metrics.selectors import keys_for_run, series
from webapp.projects.models import Project
from webapp.projects.selectors import project_for, project_list
from webapp.projects.services import create_project, delete_project
from webapp.runs.estimates import estimate
from webapp.runs.filters import parse_runs_query, runs_page
from webapp.runs.models import RunSource
from webapp.runs.presenters import run_detail
from webapp.runs.selectors import run_for
from webapp.runs.services import create_run, request_cancel


def project_json(project: Project) -> dict:
    return {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "team": {"id": project.team_id, "name": project.team.name},
        "created_at": project.created_at.isoformat(),
    }


@api_view(("GET", "POST"))
def projects(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"projects": [project_json(p) for p in project_list(request.user)]})
    data = json_object(request, ("name", "team", "description"))
    team = None
    if data.get("team") is not None:
        team = teams_of(request.user).filter(pk=whole_number(data["team"], "team")).first()
        if team is None:
            raise InputError({"team": "no such team among yours"})
    project = create_project(
        user=request.user,
        name=string(data.get("name", ""), "name"),
        team=team,
        description=string(data.get("description", ""), "description"),
    )
    return JsonResponse(project_json(project), status=201)


@api_view(("GET", "DELETE"))
def project(request: HttpRequest, project_id: int) -> HttpResponse:
    found = project_for(request.user, project_id)
    if request.method == "DELETE":
        delete_project(user=request.user, project=found)
        return HttpResponse(status=204)
    return JsonResponse(project_json(found))


@api_view(("GET", "POST"))
def project_runs(request: HttpRequest, project_id: int) -> JsonResponse:
    project = project_for(request.user, project_id)
    if request.method == "GET":
        # The runs table's filters, sort and columns (webapp.runs.filters), a page at a time.
        page = runs_page(request.user, project, parse_runs_query(request.GET))
        runs = [{k: v for k, v in r.items() if k != "cells"} for r in page.runs]
        return JsonResponse(
            {"runs": runs, "total": page.total, "next_cursor": page.next_cursor, "columns": page.columns}
        )
    data = json_object(request, ("name", "preset", "config", "source", "tags"))
    source = string(data.get("source") or RunSource.MANAGED, "source")
    if source == RunSource.EXTERNAL:
        external_run = create_external_run(
            user=request.user,
            project=project,
            name=string(data.get("name", ""), "name"),
            config=data.get("config"),
            tags=read_tags(data.get("tags")),
        )
        return JsonResponse(run_detail(external_run), status=201)
    if source != RunSource.MANAGED:
        raise InputError({"source": "must be managed (Runwright launches it) or external (you train it)"})
    if data.get("tags") is not None:
        raise InputError({"tags": "tags at creation are for external runs; tag a launched run afterwards"})
    run = create_run(
        user=request.user,
        project=project,
        name=string(data.get("name", ""), "name"),
        preset=string(data.get("preset") or "", "preset") or None,
        overrides=data.get("config") or {},
    )
    return JsonResponse({"id": run.id, "status": run.status}, status=201)


@api_view(("GET", "DELETE"))
def run(request: HttpRequest, run_id: int) -> JsonResponse:
    if request.method == "DELETE":  # team admins (webapp.api.run_actions)
        return delete_run_api(request, run_id)
    return JsonResponse(run_detail(run_for(request.user, run_id)))


@api_view(("GET", "POST"))
def run_metrics(request: HttpRequest, run_id: int) -> JsonResponse:
    if request.method == "POST":  # an external run's points (webapp.api.external)
        return external.post_metrics(request, run_id)
    found = run_for(request.user, run_id)
    key = request.GET.get("key", "").strip()
    if not key:
        # With the keys this run has, so that a client can ask again.
        body = error_body({"key": "required, e.g. ?key=train/loss"})
        return JsonResponse({**body, "keys": list(keys_for_run(found))}, status=400)
    since = request.GET.get("since_step")
    max_points = request.GET.get("max_points")
    kwargs = {}
    if since not in (None, ""):
        kwargs["since_step"] = whole_number(since, "since_step")
    if max_points not in (None, ""):
        kwargs["max_points"] = max(1, min(whole_number(max_points, "max_points"), 100_000))
    return JsonResponse(series(found, key, **kwargs))


@api_view(("POST",))
def run_cancel(request: HttpRequest, run_id: int) -> JsonResponse:
    found = run_for(request.user, run_id)  # another team's run is a 404 whatever the body
    json_object(request, ())
    found = request_cancel(user=request.user, run=found)
    return JsonResponse({"id": found.id, "status": found.status, "cancel_requested": found.cancel_requested})


@api_view(("POST",), allow_session=True)
def config_estimate(request: HttpRequest) -> JsonResponse:
    """Validate ``{"preset", "config"}`` and return its size and cost, or the field errors."""
    data = json_object(request, ("preset", "config"))
    config = resolve(string(data.get("preset") or "", "preset") or None, data.get("config") or {})
    return JsonResponse(estimate(config))
