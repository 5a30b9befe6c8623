"""The sweep page's live updates: the sweep and its trials, pushed when one of its runs changes.

A sweep's runs announce every change on their project's channel (``webapp.live``:
``{"run_id"}`` for each ingested batch and status write) and the sweep's own writes (a run
launched, the sweep completed or cancelled) announce ``{"sweep_id"}`` there
(``announce_sweep_change``), so the stream follows the project's channel and reads the sweep
again only for announcements that concern it (``webapp.state_stream``). The page polls
``sweeps:data`` (the same state) where a stream cannot be held.
"""

from __future__ import annotations

import logging
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest, HttpResponse

from webapp import live
from webapp.sse import sse_response, sse_view
from webapp.state_stream import State, state_events
from webapp.sweeps.models import Sweep
from webapp.sweeps.presenters import sweep_detail
from webapp.sweeps.selectors import sweep_for

log = logging.getLogger(__name__)


def announce_sweep_change(sweep_id: int, project_id: int) -> None:
    """Say on the project's channel that the sweep changed, once the current transaction commits.

    A Redis outage is logged only: the stream also reads the sweep when idle.
    """
    if not live.enabled():
        return

    def send() -> None:
        try:
            live.publish_to(live.project_channel(project_id), {"sweep_id": sweep_id})
        except Exception:
            log.warning("sweep %s: could not announce a change", sweep_id, exc_info=True)

    transaction.on_commit(send)


def read_sweep(sweep_id: int) -> State | None:
    sweep = Sweep.objects.filter(pk=sweep_id).select_related("project", "created_by").first()
    return sweep_detail(sweep) if sweep is not None else None


def concerns(sweep_id: int, message: dict[str, Any], state: State) -> bool:
    """Whether a message on the project's channel may change this sweep's page."""
    if message.get("sweep_id") == sweep_id:
        return True
    run_id = message.get("run_id")
    return run_id is not None and any(trial["run_id"] == run_id for trial in state["trials"])


def sweep_events(sweep_id: int, project_id: int, **options: float) -> Any:
    """The SSE body for one sweep (options: ``webapp.state_stream.state_events``'s timings)."""
    return state_events(
        live.project_channel(project_id),
        lambda: read_sweep(sweep_id),
        relevant=lambda message, state: concerns(sweep_id, message, state),
        is_over=lambda state: state["status"] != "running",
        **options,
    )


@sse_view
async def sweep_stream(request: HttpRequest, user: AbstractBaseUser, sweep_id: int) -> HttpResponse:
    """SSE: the sweep's state as it changes, then ``end`` once it is over."""
    sweep = await sync_to_async(sweep_for)(user, sweep_id)  # 404 for another team's sweep
    return sse_response(sweep_events(sweep.id, sweep.project_id))
