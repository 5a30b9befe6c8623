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
outlives a deploy or holds its worker for ever. The merging and waiting are the state
stream's (``webapp.state_stream.Announcements``); only what is sent differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Count, Max, Q, Sum
from django.http import HttpRequest, HttpResponse

from webapp import live
from webapp.projects.selectors import project_for
from webapp.runs.models import Run, RunStatus
from webapp.sse import sse, sse_response, sse_view
from webapp.state_stream import (
    IDLE_SECONDS,
    KEEPALIVE_SECONDS,
    MAX_SECONDS,
    MIN_INTERVAL_SECONDS,
    POLL_SECONDS,
    Announcements,
)

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


def _run_id(message: dict[str, Any]) -> int | None:
    run_id = message.get("run_id")
    return run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else None


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
    timings = {"poll_seconds": poll_seconds, "idle_seconds": idle_seconds, "min_interval": min_interval}
    async with Announcements(live.project_channel(project_id), **timings) as news:
        fingerprint = await read(project_id)
        # A change between the page's render and now (or while the browser reconnected): read once.
        yield sse("update", {"changed": []}, event_id="0")
        started = last_sent = loop.time()
        sent = 0
        while loop.time() - started < max_seconds:
            messages = await news.gather(lambda message: _run_id(message) is not None, since=last_sent)
            # Announced runs changed; otherwise (quiet, or no Redis) the database says whether any moved.
            now, before = await read(project_id), fingerprint
            fingerprint = now
            if messages or now != before:
                sent += 1
                changed = sorted({_run_id(message) for message in messages})[:MAX_RUN_IDS]
                yield sse("update", {"changed": changed}, event_id=str(sent))
                last_sent = loop.time()
            elif loop.time() - last_sent >= keepalive_seconds:
                last_sent = loop.time()
                yield ": keepalive\n\n"  # keeps proxies from closing an idle stream


@sse_view
async def project_runs_stream(request: HttpRequest, user: AbstractBaseUser, project_id: int) -> HttpResponse:
    """SSE: the project's runs changed (the page polls ``runs_json`` where a stream cannot be held)."""
    project = await sync_to_async(project_for)(user, project_id)  # 404 for another team's project
    return sse_response(project_events(project.id))
