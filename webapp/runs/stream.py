"""Server-sent events for the run page: new metric points, log lines and status.

A stream forwards the run's live messages (webapp.live: built by the ingester from
the rows it just stored, and published on Redis; without Redis, read by one database
poll per process, webapp.runs.feed). It reads the database itself only to catch up:
when it connects (from the page's cursor or a reconnecting browser's Last-Event-ID),
when a message does not continue its cursor (one it missed, a Redis hiccup), when
the run reaches a final status (the database has the last word), and after
``live_idle_seconds`` without a message. So a message can delay a point, never lose one.

Forwarding, not re-reading, is what keeps fifty viewers cheap: the database is read
once per batch by its writer, not once per viewer per wake-up; and the reads a stream
still makes run in the thread pool (``thread_sensitive=False``), not all on one thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async

from webapp.runs.feed import subscribe
from webapp.runs.models import FINAL_STATUSES
from webapp.runs.updates import StreamCursor, read_updates
from webapp.sse import sse

# Without Redis, how often a process reads a watched run's new rows: once for all its viewers.
POLL_SECONDS = 0.1
STATE_KEYS = ("status", "step", "last_loss", "cancel_requested", "error")


class CatchUp(Exception):
    """The message does not continue the stream's cursor: read the database instead."""


def forward(message: dict[str, Any], cursor: StreamCursor) -> dict[str, Any] | None:
    """What to send of ``message`` (None: nothing new); advances ``cursor``. Raises ``CatchUp``.

    Points are forwarded when they are the rows right after the cursor, skipped when the
    cursor is already past them (the catch-up read at connect saw them); anything else
    is a gap. Log lines likewise, by row id.
    """
    update = message.get("update")
    if not isinstance(update, dict):
        raise CatchUp  # a bare "something changed"
    points, logs = update.get("points") or {}, update.get("logs") or []
    through = message.get("points_through")
    send_points = bool(points) and _continues(message.get("points_after"), through, cursor.point_seq)
    last_log = logs[-1].get("id") if logs else None
    send_logs = bool(logs) and _continues(message.get("logs_after"), last_log, cursor.log_id)
    state = {key: update.get(key) for key in STATE_KEYS}
    if state["status"] in FINAL_STATUSES:
        raise CatchUp  # every point and the error text come from the database
    if send_points:
        cursor.point_seq = through
    if send_logs:
        cursor.log_id = last_log
    changed = state != cursor.last_state
    cursor.last_state = state
    if not (send_points or send_logs or changed):
        return None
    if send_points == bool(points) and send_logs == bool(logs):
        return update  # all of it: the message's own update, serialised once for every viewer
    return {**update, "points": points if send_points else {}, "logs": logs if send_logs else []}


def _continues(after: Any, through: Any, cursor: int) -> bool:
    """Rows in (after, through] right after ``cursor``: True; already sent: False; else a gap."""
    if not (isinstance(after, int) and isinstance(through, int)):
        raise CatchUp
    if through <= cursor:
        return False
    if after == cursor or (after <= 0 and cursor <= 0):  # seqs and ids start at 1: 0 and -1 are "none"
        return True
    raise CatchUp


def poll_updates(run_id: int, cursor: StreamCursor, *, max_reads: int = 4) -> dict[str, Any]:
    """The polling fallback's answer (static/js/live.js): the updates after ``cursor`` and the end.

    The same reads as the stream's catch-up; each update carries the cursor after it,
    which the page sends back with its next poll.
    """
    updates = []
    for _ in range(max_reads):
        update = read_updates(run_id, cursor)
        if update.payload is not None:
            updates.append({"id": cursor.event_id, "data": update.payload})
        if update.caught_up:
            break
    ended = update.final and update.caught_up
    return {"updates": updates, "end": {"status": cursor.last_state.get("status")} if ended else None}


async def run_events(
    run_id: int,
    cursor: StreamCursor,
    *,
    poll_seconds: float = POLL_SECONDS,
    keepalive_seconds: float = 15.0,
    live_idle_seconds: float = 5.0,
) -> AsyncIterator[str]:
    """The SSE body: ``update`` events until the run is final, then one ``end`` event."""
    read = sync_to_async(read_updates, thread_sensitive=False)
    yield "retry: 3000\n\n"
    # Subscribed before the first read: a message published meanwhile waits in the inbox.
    async with subscribe(run_id, poll_seconds=poll_seconds) as inbox:
        quiet = 0.0
        catch_up = True
        while True:
            if catch_up:
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
                catch_up = inbox.overflowed = False
            loop_start = _now()
            message = await inbox.next(live_idle_seconds)
            quiet += _now() - loop_start
            if message is None or inbox.overflowed:
                catch_up = True  # quiet for long, or messages dropped: the database knows
            else:
                try:
                    payload = forward(message, cursor)
                except CatchUp:
                    catch_up = True
                else:
                    if payload is not None:
                        quiet = 0.0
                        if payload is message.get("update"):  # the message is shared by the run's viewers
                            payload = message.setdefault("_json", json.dumps(payload, separators=(",", ":")))
                        yield sse("update", payload, cursor.event_id)
            if quiet >= keepalive_seconds:
                quiet = 0.0
                yield ": keepalive\n\n"  # keeps proxies from closing an idle stream


def _now() -> float:
    return asyncio.get_running_loop().time()
