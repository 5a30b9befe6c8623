"""The Fleet page's live updates: hosts, GPUs, the queue and utilisation as a person sees them.

Each heartbeat of a host (``workers.fleet``, which also reads who holds each GPU's lease), each
registration or clean shutdown, and each placement change (``webapp.fleet.services``: a run
placed, its GPUs given back, a run taken off its hosts, runs entering the queue) announce on the
``fleet`` channel (``announce_fleet_change``); the page's stream (``webapp.state_stream``) reads
the fleet again then, and every ``IDLE_SECONDS`` besides (a message lost to a Redis hiccup). The state is the
page's own sections rendered by their templates, and the charts' data, so the page swaps them
in as they are; it polls ``fleet:data`` (the same state) where a stream cannot be held.
"""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.template.loader import render_to_string

from webapp import live
from webapp.fleet import selectors
from webapp.input_errors import InputError
from webapp.sse import sse_response, sse_view
from webapp.state_stream import state_events
from webapp.whole_numbers import parse_whole_number

log = logging.getLogger(__name__)

FLEET_CHANNEL = "fleet"
CHART_HOURS = (1, 6, 24)
# Every write announces itself; this read only covers a message lost to a Redis hiccup.
IDLE_SECONDS = 5.0


def announce_fleet_change(host: str = "", *, runs: list[int] | None = None) -> None:
    """Say on the ``fleet`` channel that ``host`` beat, registered or left, or that ``runs``' placements
    changed (committed already).

    A Redis outage is logged only: the page's stream also reads the fleet when idle.
    """
    if not live.enabled():
        return
    message: dict[str, Any] = {"host": host} if host else {"runs": runs or []}
    try:
        live.publish_to(FLEET_CHANNEL, message)
    except Exception:
        log.warning("could not announce a fleet change %s", message, exc_info=True)


def announce_placements_after_commit(run_ids: list[int]) -> None:
    """``announce_fleet_change`` for these runs' placements once the caller's transaction commits."""
    if run_ids and live.enabled():
        transaction.on_commit(lambda: announce_fleet_change(runs=list(run_ids)))


def chart_hours(raw: str | None) -> int:
    """The utilisation window asked for (``?hours=``), 6 by default; a field error otherwise."""
    hours = parse_whole_number(raw if raw is not None else "6")
    if hours is None or not 1 <= hours <= 24:
        raise InputError({"hours": "must be a whole number of hours from 1 to 24"})
    return hours


def fleet_state(user: AbstractBaseUser, hours: int) -> dict[str, Any]:
    """What the page shows that changes: the hosts and queue sections, rendered, and the charts."""
    return {
        "hosts_html": render_to_string("fleet/_hosts.html", {"hosts": selectors.fleet_for(user)}),
        "queue_html": render_to_string("fleet/_queue.html", {"queue": selectors.queue_for(user)}),
        "charts": selectors.utilisation_for(hours),
        "hours": hours,
    }


@sse_view
async def fleet_stream(request: HttpRequest, user: AbstractBaseUser) -> HttpResponse:
    """SSE: the fleet's state as it changes (the page polls ``fleet_data`` where a stream cannot be held)."""
    hours = chart_hours(request.GET.get("hours"))
    body = state_events(FLEET_CHANNEL, lambda: fleet_state(user, hours), idle_seconds=IDLE_SECONDS)
    return sse_response(body)
