"""What an external run's client sends: points, events, logs, heartbeats, params, its end.

The run is created by ``POST /api/v1/projects/<id>/runs`` with ``"source": "external"``
(``webapp.api.views.new_run``). Every write needs the member role in the run's team (a
viewer gets a 403 saying so, another team's run is a 404); a run that has ended answers
409. Writes are idempotent: points per (key, step), log lines per seq.

A batch is a bare JSON array or an object holding it (``{"points": [...]}``); its items
are read by ``webapp.external.batches``, which names a bad one ``points[3].step``. The
schema documents the object form, with the items' models below.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field

from webapp.api.auth import ApiAuth
from webapp.api.body import json_list
from webapp.api.fields import JsonObject, Text
from webapp.api.lookups import run_of, run_writer
from webapp.api.schemas import NoFields, RequestBody, answers
from webapp.external import batches, services
from webapp.runs.models import Run

router = Router(tags=["external runs"])
WRITER = ApiAuth(guard=run_writer)


class RunState(Schema):
    """What every write answers: enough for a client to know whether to go on."""

    id: int
    status: str
    cancel_requested: bool


class Written(RunState):
    written: int


class PointIn(Schema):
    key: str = Field(description="the metric, e.g. train/loss")
    step: int = Field(ge=0)
    value: float | None = Field(description="null for a missing value")
    time: float | None = Field(None, description="unix time; now when left out")


class LogIn(Schema):
    message: str
    level: str = "info"
    time: float | None = None
    seq: int | None = Field(None, ge=1, description="a line with seq replaces the run's line of that seq")


def _batch_body(name: str, item: type[Schema] | None, description: str) -> dict[str, Any]:
    """The request body of a batch endpoint, for the schema (its items are checked by the batch reader)."""
    items = item.model_json_schema() if item else {"type": "object", "description": "an events.jsonl line"}
    items.pop("title", None)
    return {
        "requestBody": {
            "required": True,
            "description": description,
            "content": {
                "application/json": {
                    "schema": {
                        "type": "object",
                        "properties": {name: {"type": "array", "items": items}},
                        "required": [name],
                        "additionalProperties": False,
                    }
                }
            },
        }
    }


def state(run: Run) -> dict[str, Any]:
    return {"id": run.id, "status": run.status, "cancel_requested": run.cancel_requested}


def post_metrics(request: HttpRequest, run_id: int) -> dict[str, Any]:
    """``POST runs/<id>/metrics``: ``[{"key", "step", "value", "time"?}, ...]`` (or ``{"points": [...]}``)."""
    run = run_writer(request, run_id)
    items, _ = json_list(request, "points")
    report = batches.Report(points=batches.read_points(items))
    written = services.record(user=request.user, run=run, report=report)
    run.refresh_from_db()
    return {**state(run), "written": written}


METRICS_BODY = _batch_body("points", PointIn, "an external run's points (or the bare array)")


@router.post(
    "runs/{int:run_id}/events",
    response=answers({200: Written}, 409),
    url_name="run_events",
    auth=WRITER,
    openapi_extra=_batch_body("events", None, "lines of events.jsonl as the trainer writes them"),
)
def run_events(request: HttpRequest, run_id: int) -> dict[str, Any]:
    """``{"events": [...]}``: lines of ``events.jsonl`` as the trainer writes them (the SDK, ``runwright sync``)."""
    run = run_of(request, run_id)
    items, _ = json_list(request, "events")
    report = batches.read_events(items, current_step=run.step)
    written = services.record(user=request.user, run=run, report=report)
    run.refresh_from_db()
    return {**state(run), "written": written}


@router.post(
    "runs/{int:run_id}/logs",
    response=answers({200: Written}, 409),
    url_name="run_logs",
    auth=WRITER,
    openapi_extra=_batch_body("logs", LogIn, "log lines (or the bare array)"),
)
def run_logs(request: HttpRequest, run_id: int) -> dict[str, Any]:
    """``[{"message", "level"?, "time"?, "seq"?}, ...]`` (or ``{"logs": [...]}``)."""
    run = run_of(request, run_id)
    items, _ = json_list(request, "logs")
    services.record(user=request.user, run=run, report=batches.Report(logs=batches.read_logs(items)))
    run.refresh_from_db()
    return {**state(run), "written": len(items)}


@router.post(
    "runs/{int:run_id}/heartbeat",
    response=answers({200: RunState}, 409),
    url_name="run_heartbeat",
    auth=WRITER,
)
def run_heartbeat(request: HttpRequest, run_id: int, payload: NoFields | None = None) -> dict[str, Any]:
    """The client is alive: an external run that stops sending these is marked lost."""
    return state(services.heartbeat(user=request.user, run=run_of(request, run_id)))


class StatusIn(RequestBody):
    status: Text = Field("", description="completed, failed or cancelled")
    error: Text | None = Field(None, description="why it failed")


@router.post(
    "runs/{int:run_id}/status", response=answers({200: RunState}, 409), url_name="run_status", auth=WRITER
)
def run_status(request: HttpRequest, run_id: int, payload: StatusIn | None = None) -> dict[str, Any]:
    """The run's end: ``{"status": "completed" | "failed" | "cancelled", "error"?: "..."}``."""
    payload = payload or StatusIn()
    run = run_of(request, run_id)
    finished = services.finish(user=request.user, run=run, status=payload.status, error=payload.error or "")
    return state(finished)


class ParamsIn(RequestBody):
    config: JsonObject | None = Field(
        None, description="params added to (or replacing those in) the run's config"
    )
    tags: list[Any] | None = None


class ParamsOut(RunState):
    config: dict[str, Any]
    tags: list[str]


@router.post(
    "runs/{int:run_id}/params", response=answers({200: ParamsOut}, 409), url_name="run_params", auth=WRITER
)
def run_params(request: HttpRequest, run_id: int, payload: ParamsIn | None = None) -> dict[str, Any]:
    """``{"config": {...}, "tags"?: [...]}``: params added to (or replacing those in) the run's config."""
    payload = payload or ParamsIn()
    run = run_of(request, run_id)
    tags = batches.read_tags(payload.tags)
    run = services.update_params(user=request.user, run=run, config=payload.config or {}, tags=tags)
    return {**state(run), "config": run.config, "tags": services.run_tags(run)}
