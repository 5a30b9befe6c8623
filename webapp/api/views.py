"""Projects, runs and metrics over the API (paths are stable: operators and tests use them).

Eval jobs are in ``webapp.api.evals``, an external run's writes in ``webapp.api.external``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import ConfigDict, Field

from modelcore.config import resolve
from webapp.accounts.selectors import teams_of
from webapp.api import external
from webapp.api.auth import ApiAuth
from webapp.api.fields import JsonObject, Text, WholeNumber, query_whole_number
from webapp.api.lookups import project_of, run_of, run_writer
from webapp.api.pages import PageQuery, keyset_page
from webapp.api.schemas import NoFields, Open, RequestBody, answers
from webapp.external.batches import read_tags
from webapp.external.services import create_external_run
from webapp.input_errors import InputError, error_body
from webapp.metrics.selectors import keys_for_run, series
from webapp.projects.models import Project
from webapp.projects.selectors import project_list
from webapp.projects.services import create_project, delete_project
from webapp.runs.estimates import estimate
from webapp.runs.filters import MAX_LIMIT, parse_runs_query, runs_page
from webapp.runs.models import RunSource
from webapp.runs.presenters import run_detail
from webapp.runs.services import create_run, delete_run, request_cancel

router = Router(tags=["projects and runs"])


class TeamRef(Schema):
    id: int
    name: str


class ProjectOut(Schema):
    id: int
    name: str
    description: str
    team: TeamRef
    created_at: str


class ProjectList(Schema):
    projects: list[ProjectOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last")


class ProjectIn(RequestBody):
    name: Text = ""
    team: WholeNumber | None = Field(None, description="one of your teams; your personal team when left out")
    description: Text = ""


def project_json(project: Project) -> dict[str, Any]:
    return {
        "id": project.id,
        "name": project.name,
        "description": project.description,
        "team": {"id": project.team_id, "name": project.team.name},
        "created_at": project.created_at.isoformat(),
    }


@router.get("projects", response=answers({200: ProjectList}), url_name="projects")
def list_projects(request: HttpRequest, params: Query[PageQuery]) -> dict[str, Any]:
    """The projects of your teams, by team then name."""
    page = keyset_page(
        project_list(request.user).select_related("team"), ("team__name", "name", "id"), params
    )
    return {"projects": [project_json(p) for p in page.rows], "next_cursor": page.next_cursor}


@router.post("projects", response=answers({201: ProjectOut}), url_name="projects")
def new_project(request: HttpRequest, payload: ProjectIn | None = None) -> Status:
    payload = payload or ProjectIn()
    team = None
    if payload.team is not None:
        team = teams_of(request.user).filter(pk=payload.team).first()
        if team is None:
            raise InputError({"team": "no such team among yours"})
    project = create_project(user=request.user, name=payload.name, team=team, description=payload.description)
    return Status(201, project_json(project))


@router.get(
    "projects/{int:project_id}",
    response=answers({200: ProjectOut}),
    url_name="project",
    auth=ApiAuth(guard=project_of),
)
def get_project(request: HttpRequest, project_id: int) -> dict[str, Any]:
    return project_json(project_of(request, project_id))


@router.delete(
    "projects/{int:project_id}",
    response=answers({204: None}),
    url_name="project",
    auth=ApiAuth(guard=project_of),
)
def remove_project(request: HttpRequest, project_id: int) -> HttpResponse:
    """Team admins delete a project with its runs (refused while one is active)."""
    delete_project(user=request.user, project=project_of(request, project_id))
    return HttpResponse(status=204)


class RunsQueryParams(Schema):
    """The runs table's query (``webapp.runs.filters``): a filter copied from the page's address works here."""

    status: list[str] = Field([], description="any of these statuses (repeat, or separate by commas)")
    tag: list[str] = Field([], description="any of these tags")
    preset: list[str] = Field([], description="any of these presets")
    q: str = Field("", description="each word in the name, preset or status")
    archived: str = Field("", description="1: archived runs too")
    where: list[str] = Field([], description="conditions, e.g. model.n_layers>=8 or val/loss:min<2.1")
    columns: str = Field("", description="extra columns, e.g. model.n_layers,val/loss:min")
    sort: str = Field("", description="a column, - for descending, e.g. -val/loss:min")
    limit: str = Field("", description=f"rows per page, 1-{MAX_LIMIT} (default 50)")
    cursor: str = Field("", description="the previous page's next_cursor")


class RunRow(Open):
    id: int
    name: str
    status: str
    step: int
    preset: str
    source: str
    archived: bool
    last_loss: float | None
    created_at: str | None
    url: str
    tags: list[str]
    columns: dict[str, Any]


class ColumnOut(Schema):
    id: str
    label: str
    kind: str


class RunList(Schema):
    runs: list[RunRow]
    total: int = Field(description="runs the query selects, over all pages")
    next_cursor: str | None
    columns: list[ColumnOut]


class Attempt(Open):
    number: int
    kind: str
    started_at: str
    ended_at: str | None
    status: str


class RunOut(Open):
    id: int
    name: str
    status: str
    step: int
    project: int
    preset: str
    source: str
    archived: bool
    cancel_requested: bool
    config: dict[str, Any]
    error: str
    attempt: int
    attempts: list[Attempt]


class RunCreated(Open):
    id: int
    status: str


class RunIn(RequestBody):
    name: Text = ""
    preset: Text | None = Field(None, description="a preset's name, e.g. tiny-cpu")
    config: JsonObject | None = Field(None, description="config fields laid over the preset, by section")
    source: Text | None = Field(None, description="managed (Runwright launches it, the default) or external")
    tags: list[Any] | None = Field(None, description="an external run's tags")


@router.get(
    "projects/{int:project_id}/runs",
    response=answers({200: RunList}),
    url_name="project_runs",
    auth=ApiAuth(guard=project_of),
)
def list_runs(request: HttpRequest, project_id: int, params: Query[RunsQueryParams]) -> dict[str, Any]:
    """A page of the project's runs, filtered and sorted as the runs table does."""
    # The query string itself: parse_runs_query reads commas, repeats and its own errors.
    page = runs_page(request.user, project_of(request, project_id), parse_runs_query(request.GET))
    runs = [{k: v for k, v in r.items() if k != "cells"} for r in page.runs]
    return {"runs": runs, "total": page.total, "next_cursor": page.next_cursor, "columns": page.columns}


@router.post(
    "projects/{int:project_id}/runs",
    response=answers({201: RunCreated}),
    url_name="project_runs",
    auth=ApiAuth(guard=project_of),
)
def new_run(request: HttpRequest, project_id: int, payload: RunIn | None = None) -> Status:
    """Launch a run (a preset and config fields over it), or register an external one (``source``)."""
    project = project_of(request, project_id)
    payload = payload or RunIn()
    source = payload.source or RunSource.MANAGED
    if source == RunSource.EXTERNAL:
        external_run = create_external_run(
            user=request.user,
            project=project,
            name=payload.name,
            config=payload.config,
            tags=read_tags(payload.tags),
        )
        return Status(201, run_detail(external_run))
    if source != RunSource.MANAGED:
        raise InputError({"source": "must be managed (Runwright launches it) or external (you train it)"})
    if payload.tags is not None:
        raise InputError({"tags": "tags at creation are for external runs; tag a launched run afterwards"})
    run = create_run(
        user=request.user,
        project=project,
        name=payload.name,
        preset=payload.preset or None,
        overrides=payload.config or {},
    )
    return Status(201, {"id": run.id, "status": run.status})


@router.get("runs/{int:run_id}", response=answers({200: RunOut}), url_name="run", auth=ApiAuth(guard=run_of))
def get_run(request: HttpRequest, run_id: int) -> dict[str, Any]:
    return run_detail(run_of(request, run_id))


@router.delete("runs/{int:run_id}", response=answers({204: None}), url_name="run", auth=ApiAuth(guard=run_of))
def remove_run(request: HttpRequest, run_id: int) -> HttpResponse:
    """Team admins delete an ended run: its rows, then its directory. 204 and no body."""
    delete_run(user=request.user, run=run_of(request, run_id))
    return HttpResponse(status=204)


class SeriesQuery(Schema):
    key: str = Field("", description="the metric, e.g. train/loss (required)")
    since_step: str = Field("", description="only points after this step")
    max_points: str = Field("", description="at most this many points, downsampled keeping spikes (1-100000)")


class SeriesOut(Open):
    key: str
    steps: list[int]
    values: list[float | None]


class MissingKey(Schema):
    model_config = ConfigDict(extra="allow")
    error: str
    errors: dict[str, str]
    keys: list[str] | None = None


@router.get(
    "runs/{int:run_id}/metrics",
    response={**answers({200: SeriesOut}), 400: MissingKey},
    url_name="run_metrics",
    auth=ApiAuth(guard=run_of),
)
def run_metrics(request: HttpRequest, run_id: int, params: Query[SeriesQuery]) -> Any:
    """One metric's points; without ``key``, a 400 listing the keys the run has."""
    found = run_of(request, run_id)
    key = params.key.strip()
    if not key:
        return Status(
            400, {**error_body({"key": "required, e.g. ?key=train/loss"}), "keys": list(keys_for_run(found))}
        )
    kwargs: dict[str, int] = {}
    for name, raw in (("since_step", params.since_step), ("max_points", params.max_points)):
        if raw != "":
            kwargs[name] = query_whole_number(raw, name)
    if "max_points" in kwargs:
        kwargs["max_points"] = max(1, min(kwargs["max_points"], 100_000))
    return series(found, key, **kwargs)


class CancelState(Schema):
    id: int
    status: str
    cancel_requested: bool


@router.post(
    "runs/{int:run_id}/cancel",
    response=answers({200: CancelState}),
    url_name="run_cancel",
    auth=ApiAuth(guard=run_of),
)
def run_cancel(request: HttpRequest, run_id: int, payload: NoFields | None = None) -> dict[str, Any]:
    found = request_cancel(user=request.user, run=run_of(request, run_id))
    return {"id": found.id, "status": found.status, "cancel_requested": found.cancel_requested}


class EstimateIn(RequestBody):
    preset: Text | None = None
    config: JsonObject | None = None


class EstimateOut(Open):
    num_params: int
    num_active_params: int
    flops_per_token: float
    tokens_per_step: int
    total_tokens: int
    mesh: dict[str, Any]
    display: dict[str, Any]


@router.post(
    "config/estimate",
    response=answers({200: EstimateOut}),
    url_name="config_estimate",
    auth=ApiAuth(allow_session=True),
)
def config_estimate(request: HttpRequest, payload: EstimateIn | None = None) -> dict[str, Any]:
    """Validate ``{"preset", "config"}`` and return its size and cost, or the field errors."""
    payload = payload or EstimateIn()
    return estimate(resolve(payload.preset or None, payload.config or {}))


@router.post(
    "runs/{int:run_id}/metrics",
    response=answers({200: external.Written}, 409),
    url_name="run_metrics",
    auth=ApiAuth(guard=run_writer),
    openapi_extra=external.METRICS_BODY,
)
def add_metrics(request: HttpRequest, run_id: int) -> dict[str, Any]:
    """An external run's points: ``[{"key", "step", "value", "time"?}, ...]`` (or ``{"points": [...]}``)."""
    return external.post_metrics(request, run_id)
