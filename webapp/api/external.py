"""What an external run's client sends: points, events, logs, heartbeats, params, its end.

The run is created by ``POST /api/v1/projects/<id>/runs`` with ``"source": "external"``
(``webapp.api.views.project_runs``). Every write needs the member role in the run's team
(a viewer gets a 403 saying so, another team's run is a 404); a run that has ended answers
409. Writes are idempotent: points per (key, step), log lines per seq.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse

from webapp.api.auth import api_view
from webapp.api.body import json_list, json_object
from webapp.api.fields import string
from webapp.external import batches, services
from webapp.external.services import RunEnded
from webapp.runs.models import Run
from webapp.runs.selectors import run_for


def _ended_is_409(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except RunEnded as exc:
            return JsonResponse({"error": str(exc), "status": exc.run.status}, status=409)

    return wrapper


def _writable(request: HttpRequest, run_id: int) -> Run:
    """The run, once the caller may write to it: 404 for another team's, 403 for a viewer, then the body."""
    run = run_for(request.user, run_id)
    services.require_writer(request.user, run)
    return run


def state(run: Run) -> dict[str, Any]:
    """What every write answers: enough for a client to know whether to go on."""
    return {"id": run.id, "status": run.status, "cancel_requested": run.cancel_requested}


@_ended_is_409
def post_metrics(request: HttpRequest, run_id: int) -> JsonResponse:
    """``[{"key", "step", "value", "time"?}, ...]`` (or ``{"points": [...]}``)."""
    run = _writable(request, run_id)
    items, _ = json_list(request, "points")
    report = batches.Report(points=batches.read_points(items))
    written = services.record(user=request.user, run=run, report=report)
    run.refresh_from_db()
    return JsonResponse({**state(run), "written": written})


@api_view(("POST",))
@_ended_is_409
def run_events(request: HttpRequest, run_id: int) -> JsonResponse:
    """``{"events": [...]}``: lines of ``events.jsonl`` as the trainer writes them (the SDK, ``runwright sync``)."""
    run = _writable(request, run_id)
    items, _ = json_list(request, "events")
    report = batches.read_events(items, current_step=run.step)
    written = services.record(user=request.user, run=run, report=report)
    run.refresh_from_db()
    return JsonResponse({**state(run), "written": written})


@api_view(("POST",))
@_ended_is_409
def run_logs(request: HttpRequest, run_id: int) -> JsonResponse:
    """``[{"message", "level"?, "time"?, "seq"?}, ...]`` (or ``{"logs": [...]}``)."""
    run = _writable(request, run_id)
    items, _ = json_list(request, "logs")
    services.record(user=request.user, run=run, report=batches.Report(logs=batches.read_logs(items)))
    run.refresh_from_db()
    return JsonResponse({**state(run), "written": len(items)})


@api_view(("POST",))
@_ended_is_409
def run_heartbeat(request: HttpRequest, run_id: int) -> JsonResponse:
    run = _writable(request, run_id)
    json_object(request, ())
    return JsonResponse(state(services.heartbeat(user=request.user, run=run)))


@api_view(("POST",))
@_ended_is_409
def run_status(request: HttpRequest, run_id: int) -> JsonResponse:
    """``{"status": "completed" | "failed" | "cancelled", "error"?: "..."}``."""
    run = _writable(request, run_id)
    data = json_object(request, ("status", "error"))
    status = string(data.get("status", ""), "status")
    error = string(data.get("error") or "", "error")
    return JsonResponse(state(services.finish(user=request.user, run=run, status=status, error=error)))


@api_view(("POST",))
def run_params(request: HttpRequest, run_id: int) -> JsonResponse:
    """``{"config": {...}, "tags"?: [...]}``: params added to (or replacing those in) the run's config."""
    run = _writable(request, run_id)
    data = json_object(request, ("config", "tags"))
    tags = batches.read_tags(data.get("tags"))
    run = services.update_params(user=request.user, run=run, config=data.get("config") or {}, tags=tags)
    return JsonResponse({**state(run), "config": run.config, "tags": services.run_tags(run)})
