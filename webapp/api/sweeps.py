"""Sweeps over the API: start one on a project, list them, follow one, cancel one.

The body of ``POST projects/<id>/sweeps`` is the spec the web form builds: ``preset``,
``config`` (partial, laid over the preset), ``method`` (grid | random), ``parameters``
(``{"optim.lr": {"min": 1e-4, "max": 1e-2, "scale": "log"}, "model.n_layers": {"values":
[2, 4]}}``), ``budget``, ``concurrency``, ``seed``, ``metric``, ``goal`` (min | max) and
optionally ``halving_step`` and ``halving_eta``. A bad field is a 400 naming it.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.api.auth import ApiAuth
from webapp.api.fields import JsonObject, Text
from webapp.api.lookups import project_of, sweep_of
from webapp.api.pages import PageQuery, keyset_page
from webapp.api.schemas import NoFields, Open, RequestBody, answers
from webapp.sweeps.presenters import sweep_detail, sweep_summary
from webapp.sweeps.selectors import sweeps_of_project
from webapp.sweeps.services import cancel_sweep, create_sweep

router = Router(tags=["sweeps"])


class SweepOut(Open):
    id: int
    project: int
    name: str
    status: str
    error: str
    preset: str
    config: dict[str, Any]
    method: str
    parameters: dict[str, Any]
    budget: int
    launched: int
    concurrency: int
    metric: str
    goal: str
    halving_step: int | None
    halving_eta: int | None
    created_at: str
    finished_at: str | None
    created_by: str | None


class Trial(Open):
    trial: int
    values: dict[str, Any]
    run_id: int | None
    status: str
    metric: float | None


class SweepDetail(SweepOut):
    trials: list[Trial]


class SweepList(Schema):
    sweeps: list[SweepOut]
    next_cursor: str | None


# Numbers are typed loosely on purpose: the sweep service checks each (bounds included) and
# names the field; a string where a number belongs is its 400, not a second set of messages.
class SweepIn(RequestBody):
    name: Text = ""
    preset: Text = Field("", description="the base preset, e.g. tiny-cpu")
    config: JsonObject | None = Field(None, description="config fields laid over the preset")
    method: Any = Field(None, description="grid or random", json_schema_extra={"type": "string"})
    parameters: Any = Field(
        None, description="config path -> values or a range", json_schema_extra={"type": "object"}
    )
    budget: Any = Field(None, description="trials (random search)", json_schema_extra={"type": "integer"})
    concurrency: Any = Field(
        None, description="trials running at once (1-64)", json_schema_extra={"type": "integer"}
    )
    seed: Any = Field(None, json_schema_extra={"type": "integer"})
    metric: Any = Field(None, description="e.g. val/loss", json_schema_extra={"type": "string"})
    goal: Any = Field(None, description="min or max", json_schema_extra={"type": "string"})
    halving_step: Any = Field(
        None, description="successive halving at this step", json_schema_extra={"type": "integer"}
    )
    halving_eta: Any = Field(
        None, description="keep the top 1/eta at each rung", json_schema_extra={"type": "integer"}
    )


@router.get(
    "projects/{int:project_id}/sweeps",
    response=answers({200: SweepList}),
    url_name="project_sweeps",
    auth=ApiAuth(guard=project_of),
)
def project_sweeps(request: HttpRequest, project_id: int, params: Query[PageQuery]) -> dict[str, Any]:
    """The project's sweeps, newest first."""
    sweeps = sweeps_of_project(request.user, project_of(request, project_id))
    page = keyset_page(sweeps, ("-created_at", "-id"), params)
    return {"sweeps": [sweep_summary(s) for s in page.rows], "next_cursor": page.next_cursor}


@router.post(
    "projects/{int:project_id}/sweeps",
    response=answers({201: SweepDetail}),
    url_name="project_sweeps",
    auth=ApiAuth(guard=project_of),
)
def new_sweep(request: HttpRequest, project_id: int, payload: SweepIn | None = None) -> Status:
    spec = payload.model_dump(exclude_unset=True) if payload else {}
    sweep = create_sweep(user=request.user, project=project_of(request, project_id), spec=spec)
    return Status(201, sweep_detail(sweep))


@router.get(
    "sweeps/{int:sweep_id}",
    response=answers({200: SweepDetail}),
    url_name="sweep",
    auth=ApiAuth(guard=sweep_of),
)
def sweep(request: HttpRequest, sweep_id: int) -> dict[str, Any]:
    return sweep_detail(sweep_of(request, sweep_id))


@router.post(
    "sweeps/{int:sweep_id}/cancel",
    response=answers({200: SweepDetail}),
    url_name="sweep_cancel",
    auth=ApiAuth(guard=sweep_of),
)
def sweep_cancel(request: HttpRequest, sweep_id: int, payload: NoFields | None = None) -> dict[str, Any]:
    return sweep_detail(cancel_sweep(user=request.user, sweep=sweep_of(request, sweep_id)))
