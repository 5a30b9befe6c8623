"""Server-sent events for the run page: new metric points, log lines and status.

The database is the source of what is sent. With Redis configured, a message
on ``run:<id>`` (webapp.live) only wakes the stream up to read the database at
once; without Redis (embedded mode) the stream reads it every second. Reading
from one place means a message that raced the subscription, or a Redis hiccup,
can delay a point but never lose one.

The stream follows rows in the order they were written, not by step: points by
``MetricPoint.seq`` (renewed on every upsert), log lines by their row id. So a
key logged for a step already sent (``val/loss`` after the validation pass), a
step re-logged by a resumed attempt, and a skip warning are all still sent. Each
update carries that cursor as its SSE ``id``; a reconnecting browser sends it
back as ``Last-Event-ID`` and the stream resumes just after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db.models import Max

from webapp.metrics.models import MetricPoint
from webapp.runs.models import FINAL_STATUSES, Run, RunLog
from webapp.runs.presenters import log_line

log = logging.getLogger(__name__)

MAX_POINTS_PER_READ = 5000
MAX_LOGS_PER_READ = 500
MAX_CURSOR = 2**63 - 1  # bigint columns


@dataclass
class StreamCursor:
    """What the page already has: points written up to ``point_seq``, log rows up to ``log_id``."""

    point_seq: int = -1
    log_id: int = -1
    last_state: dict[str, Any] = field(default_factory=dict)

    @property
    def event_id(self) -> str:
        return f"{self.point_seq}:{self.log_id}"

    def __post_init__(self) -> None:
        # From the client: kept within the columns' range, so a silly value reads as "all" or "none".
        self.point_seq = max(-1, min(self.point_seq, MAX_CURSOR))
        self.log_id = max(-1, min(self.log_id, MAX_CURSOR))


def sse(event: str, data: dict[str, Any], event_id: str | None = None) -> str:
    head = f"id: {event_id}\n" if event_id else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def cursor_from_event_id(event_id: str) -> StreamCursor | None:
    """The cursor a reconnecting browser sends back as ``Last-Event-ID`` (``point_seq:log_id``)."""
    point_seq, sep, log_id = event_id.partition(":")
    try:
        return StreamCursor(point_seq=int(point_seq), log_id=int(log_id)) if sep else None
    except ValueError:
        return None


def latest_log_id(run_id: int) -> int:
    """The cursor for a page that shows the run's log as it is now (read it before the log)."""
    return RunLog.objects.filter(run_id=run_id).aggregate(last=Max("id"))["last"] or -1


@dataclass
class Update:
    payload: dict[str, Any] | None  # None: nothing new to send
    final: bool  # the run has reached a final status
    caught_up: bool  # everything committed so far has been read


def read_updates(run_id: int, cursor: StreamCursor) -> Update:
    """New points and logs since ``cursor`` plus the run's state if it changed; advances ``cursor``.

    The run row is read first: a final status is written after the last points,
    so points read afterwards are complete.
    """
    run = Run.objects.filter(pk=run_id).first()
    if run is None:
        return Update({"status": "deleted", "points": {}, "logs": []}, final=True, caught_up=True)
    state = {
        "status": run.status,
        "step": run.step,
        "last_loss": run.last_loss,
        "cancel_requested": run.cancel_requested,
        "error": run.error if run.status in FINAL_STATUSES else "",
    }
    rows = list(
        MetricPoint.objects.filter(run_id=run_id, seq__gt=cursor.point_seq)
        .order_by("seq")
        .values_list("seq", "key", "step", "value")[:MAX_POINTS_PER_READ]
    )
    points: dict[str, list[list[Any]]] = {}
    for _, key, step, value in rows:
        points.setdefault(key, []).append([step, value])
    entries = list(
        RunLog.objects.filter(run_id=run_id, id__gt=cursor.log_id).order_by("id")[:MAX_LOGS_PER_READ]
    )
    logs = [{**log_line(entry), "id": entry.id} for entry in entries]
    # A full page may leave rows behind; only a short read proves we are caught up.
    caught_up = len(rows) < MAX_POINTS_PER_READ and len(logs) < MAX_LOGS_PER_READ
    if rows:
        cursor.point_seq = rows[-1][0]
    if entries:
        cursor.log_id = entries[-1].id
    changed = state != cursor.last_state
    cursor.last_state = state
    final = run.status in FINAL_STATUSES
    if not (points or logs or changed):
        return Update(None, final, caught_up)
    duration = run.duration_seconds
    payload = {
        **state,
        "duration_s": None if duration is None else round(duration, 1),
        "points": points,
        "logs": logs,
    }
    return Update(payload, final, caught_up)


async def run_events(
    run_id: int,
    cursor: StreamCursor,
    *,
    poll_seconds: float = 1.0,
    keepalive_seconds: float = 15.0,
    live_idle_seconds: float = 5.0,
) -> AsyncIterator[str]:
    """The SSE body: ``update`` events until the run is final, then one ``end`` event."""
    read = sync_to_async(read_updates, thread_sensitive=True)
    wakeups = _live_wakeups(run_id) if settings.REDIS_URL else None
    yield "retry: 3000\n\n"
    quiet = 0.0
    try:
        while True:
            update = await read(run_id, cursor)
            if update.payload is not None:
                quiet = 0.0
                # The id lets a reconnecting EventSource resume where it stopped.
                yield sse("update", update.payload, cursor.event_id)
            if not update.caught_up:
                continue  # fetch the rest before waiting
            if update.final:
                yield sse("end", {"status": cursor.last_state.get("status")})
                return
            quiet += await _wait(wakeups, poll_seconds if wakeups is None else live_idle_seconds)
            if quiet >= keepalive_seconds:
                quiet = 0.0
                yield ": keepalive\n\n"  # keeps proxies from closing an idle stream
    finally:
        if wakeups is not None:
            await wakeups.aclose()


class _LiveWakeups:
    """Pumps webapp.live messages into a queue so waiting on them can time out safely."""

    def __init__(self, run_id: int):
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.task = asyncio.ensure_future(self._pump(run_id))

    async def _pump(self, run_id: int) -> None:
        # Imported only with Redis configured: the embedded default never loads the client.
        from webapp.live import listen

        async for message in listen(run_id):
            await self.queue.put(message)

    @property
    def broken(self) -> bool:
        return self.task.done()

    async def aclose(self) -> None:
        self.task.cancel()
        # Bounded: a Redis client caught mid-connect can swallow the cancellation,
        # and a finished stream must never hang on its helper task.
        await asyncio.wait([self.task], timeout=2.0)
        if self.task.done() and not self.task.cancelled():
            self.task.exception()  # retrieved, so asyncio does not log it as unhandled


def _live_wakeups(run_id: int) -> _LiveWakeups | None:
    try:
        return _LiveWakeups(run_id)
    except Exception:
        log.warning("live updates unavailable for run %s; polling the database", run_id, exc_info=True)
        return None


async def _wait(wakeups: _LiveWakeups | None, timeout: float) -> float:
    """Sleep until a live message arrives or ``timeout`` passes; returns the seconds waited."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    if wakeups is None or wakeups.broken:
        # Polling mode, or Redis went away: fall back to reading every second.
        await asyncio.sleep(min(timeout, 1.0) if wakeups is not None else timeout)
        return loop.time() - start
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wakeups.queue.get(), timeout)
        # Coalesce a burst of messages into one database read.
        while not wakeups.queue.empty():
            wakeups.queue.get_nowait()
    return loop.time() - start
