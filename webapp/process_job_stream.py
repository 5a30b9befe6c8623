"""Server-sent events for a process job's page (an eval job, a sampling or export job): its state as it changes, then the end.

The same live mechanism as a run page's (``static/js/live.js`` chooses the stream, or polls
the job's JSON where a stream cannot be held): with Redis, every change the job's writes
announce (``webapp.process_jobs.ProcessJobRows.announce``) is forwarded as it is published; the
database is read at connect, when a message is not a job's state, and after
``idle_seconds`` without one (a change made while the stream subscribes, or a message lost
in a Redis hiccup, is late by that much, never lost, and the end is never missed).
Without Redis the stream reads the job every ``poll_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from asgiref.sync import sync_to_async

from webapp import live
from webapp.process_jobs import ProcessJobRows
from webapp.sse import sse

# Without Redis: how often a stream reads its job (progress moves every few seconds).
POLL_SECONDS = 0.5


async def job_events(
    rows: ProcessJobRows,
    job_id: int,
    *,
    poll_seconds: float = POLL_SECONDS,
    idle_seconds: float = 5.0,
    keepalive_seconds: float = 15.0,
) -> AsyncIterator[str]:
    """The SSE body: an ``update`` per change of the job's state, then one ``end`` once it is over.

    ``rows`` is the kind's ``JOBS`` (its ``transitions.py``); the job's state is a dict with
    ``id`` and ``is_active``: its writes announce it on its channel, ``rows.read_state`` reads it.
    """
    read = sync_to_async(rows.read_state, thread_sensitive=False)
    yield "retry: 3000\n\n"
    channel = rows.channel(job_id)
    messages = live.listen_to(channel, keepalive_seconds=idle_seconds) if live.enabled() else None
    try:
        last: dict[str, Any] | None = None
        state = await read(job_id)
        quiet = 0.0
        while True:
            if state is None:  # deleted meanwhile
                yield sse("end", {"status": "deleted"})
                return
            if state != last:
                quiet = 0.0
                last = state
                yield sse("update", state)
            if not state["is_active"]:
                yield sse("end", state)
                return
            started = asyncio.get_running_loop().time()
            message = await anext(messages) if messages is not None else await asyncio.sleep(poll_seconds)
            quiet += asyncio.get_running_loop().time() - started
            if isinstance(message, dict) and message.get("id") == job_id and "is_active" in message:
                state = message  # the state as the writer announced it, after its commit
            else:
                state = await read(job_id)  # no Redis, or quiet for idle_seconds: the database knows
            if quiet >= keepalive_seconds:
                quiet = 0.0
                yield ": keepalive\n\n"  # keeps proxies from closing an idle stream
    finally:
        if messages is not None:
            with contextlib.suppress(Exception):
                await messages.aclose()
