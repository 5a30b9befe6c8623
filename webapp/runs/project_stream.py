"""Server-sent events for a project's runs list: "the runs changed", pushed as they change.

The list's rows depend on the viewer's own query (filter, columns, sort, page, the find
box as it is typed), so the stream does not send rows: each ``update`` event says which
runs changed and the page asks for its rows again (``projects:runs_json`` with its own
query, the same JSON the polling fallback reads; ``static/js/runs_list.js`` through
``rw.live``).

With Redis, every announcement on the project's channel (``webapp.live.project_channel``:
each ingested batch and status change of its runs) makes one ``update``; announcements
are merged so that a busy project sends at most one every ``min_interval`` seconds. The
page is told to read its rows once at connect (what changed since it was rendered); the
database is read after ``idle_seconds`` without an announcement (a run
created, or a message lost in a Redis hiccup, is late by that much, never lost). Without
Redis, or once it fails, the stream reads the database every ``poll_seconds``. The
stream ends after ``max_seconds`` (the browser reconnects at once), so no connection
outlives a deploy or holds its worker for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.db.models import Count, Max, Q, Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.http import require_GET

from webapp import live
from webapp.projects.selectors import project_for
from webapp.runs.models import Run, RunStatus
from webapp.runs.stream import sse, sse_response

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
IDLE_SECONDS = 10.0
MIN_INTERVAL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
MAX_SECONDS = 600.0
MAX_RUN_IDS = 50  # an update names at most this many changed runs (the page re-reads its rows anyway)


def runs_fingerprint(project_id: int) -> tuple[Any, ...]:
    """What the runs list shows of a project's runs, summed up in one query: it differs after a
    run is created, deleted, archived, changes status or moves on a step."""
    counts = {f"n_{s}": Count("id", filter=Q(status=s)) for s in RunStatus.values}
    row = Run.objects.filter(project_id=project_id).aggregate(
        n=Count("id"),
        last_id=Max("id"),
        steps=Sum("step"),
        started=Max("started_at"),
        finished=Max("finished_at"),
        archived=Count("id", filter=Q(archived=True)),
        **counts,
    )
    return tuple(sorted(row.items()))


async def _pump(project_id: int, inbox: asyncio.Queue[int]) -> None:
    async for message in live.listen_to(live.project_channel(project_id)):
        run_id = message.get("run_id")
        if isinstance(run_id, int) and not isinstance(run_id, bool):
            with contextlib.suppress(asyncio.QueueFull):
                inbox.put_nowait(run_id)


async def project_events(
    project_id: int,
    *,
    poll_seconds: float = POLL_SECONDS,
    idle_seconds: float = IDLE_SECONDS,
    min_interval: float = MIN_INTERVAL_SECONDS,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> AsyncIterator[str]:
    """The SSE body: an ``update`` ``{"changed": [run ids]}`` each time the project's runs change."""
    loop = asyncio.get_running_loop()
    read = sync_to_async(runs_fingerprint, thread_sensitive=False)
    yield "retry: 3000\n\n"
    inbox: asyncio.Queue[int] = asyncio.Queue(1000)
    pump = asyncio.ensure_future(_pump(project_id, inbox)) if live.enabled() else None
    try:
        fingerprint = await read(project_id)
        # A change between the page's render and now (or while the browser reconnected): read once.
        yield sse("update", {"changed": []}, event_id="0")
        started = last_sent = last_event = loop.time()
        changed: set[int] = set()
        pending = False
        sent = 0
        while loop.time() - started < max_seconds:
            pushed = pump is not None and not pump.done()
            if pending:
                wait = max(0.0, last_sent + min_interval - loop.time())
            else:
                wait = idle_seconds if pushed else poll_seconds
            try:
                run_id = await asyncio.wait_for(inbox.get(), wait)
            except TimeoutError:
                run_id = None
            if run_id is not None:
                changed.add(run_id)
                pending = True
                continue  # gather what else is announced until the interval allows an update
            if not pending:  # quiet, or no Redis: the database says whether anything moved
                now = await read(project_id)
                pending, fingerprint = now != fingerprint, now
            if pending:
                if changed:
                    fingerprint = await read(project_id)
                sent += 1
                yield sse("update", {"changed": sorted(changed)[:MAX_RUN_IDS]}, event_id=str(sent))
                last_sent = last_event = loop.time()
                changed.clear()
                pending = False
            elif loop.time() - last_event >= keepalive_seconds:
                last_event = loop.time()
                yield ": keepalive\n\n"  # keeps proxies from closing an idle stream
    finally:
        if pump is not None:
            pump.cancel()
            await asyncio.wait([pump], timeout=2.0)
            if pump.done() and not pump.cancelled() and pump.exception() is not None:
                log.warning("project %s: live announcements failed", project_id, exc_info=pump.exception())


@require_GET
async def project_runs_stream(request: HttpRequest, project_id: int) -> HttpResponse:
    """SSE: the project's runs changed (the page polls ``runs_json`` where a stream cannot be held).

    A visitor not logged in gets a 401: an EventSource cannot follow a redirect to the login page.
    """
    user = await request.auser()
    if not user.is_authenticated:
        return JsonResponse({"error": "log in first"}, status=401)
    project = await sync_to_async(project_for)(user, project_id)  # 404 for another team's project
    return sse_response(project_events(project.id))
