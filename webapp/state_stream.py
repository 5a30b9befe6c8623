"""Server-sent events of a page's whole state, re-read when its writers say something changed.

For pages whose state is small and read in a few queries (a sweep's trials, the fleet), so the
stream sends the state itself and the page draws it: no second request. The same live
mechanism as the other pages (``static/js/live.js`` chooses the stream, or polls the page's
JSON, which is the same state, where a stream cannot be held):

- with Redis, a message on ``channel`` that ``relevant`` accepts makes the stream read the
  state again; messages are merged so that a busy channel costs one read every
  ``min_interval`` seconds. The state is also read after ``idle_seconds`` without one (a
  change whose writer announces nothing, or a message lost in a Redis hiccup, is late by
  that much, never lost);
- without Redis, or once it fails, the state is read every ``poll_seconds``.

An ``update`` is sent when the state differs from the last one sent (the first at connect);
``end`` once ``is_over(state)`` (nothing more will change) or the thing is gone (state None).
The stream ends after ``max_seconds`` (the browser reconnects at once), so no connection
outlives a deploy or holds its worker for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from asgiref.sync import sync_to_async

from webapp import live
from webapp.sse import sse

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0
IDLE_SECONDS = 10.0
MIN_INTERVAL_SECONDS = 1.0
KEEPALIVE_SECONDS = 15.0
MAX_SECONDS = 600.0

State = dict[str, Any]


class Announcements:
    """A channel's messages while a stream is open, merged so a busy channel wakes it once per interval.

    Used as ``async with``: with Redis a task moves the channel's messages into an inbox until
    the block ends; without Redis, or once the subscription fails, there are none and a wait
    lasts ``poll_seconds`` instead of ``idle_seconds``. The state stream and the runs list's
    stream (``webapp.runs.project_stream``) wait on it between their database reads.
    """

    def __init__(
        self, channel: str, *, poll_seconds: float, idle_seconds: float, min_interval: float
    ) -> None:
        self.channel = channel
        self.poll_seconds = poll_seconds
        self.idle_seconds = idle_seconds
        self.min_interval = min_interval
        self._inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue(1000)
        self._pump: asyncio.Future[None] | None = None

    async def __aenter__(self) -> Announcements:
        if live.enabled():
            self._pump = asyncio.ensure_future(self._fill())
        return self

    async def __aexit__(self, *exc: object) -> None:
        pump = self._pump
        if pump is None:
            return
        pump.cancel()
        await asyncio.wait([pump], timeout=2.0)
        if pump.done() and not pump.cancelled() and pump.exception() is not None:
            log.warning("%s: live announcements failed", self.channel, exc_info=pump.exception())

    async def _fill(self) -> None:
        async for message in live.listen_to(self.channel):
            with contextlib.suppress(asyncio.QueueFull):
                self._inbox.put_nowait(message)

    async def gather(self, relevant: Callable[[dict[str, Any]], bool], since: float) -> list[dict[str, Any]]:
        """The relevant messages of the next wake-up; [] when none came in the idle (or poll) time.

        Once a relevant message comes, the rest are let gather until ``min_interval`` after
        ``since`` (the caller's last read or update), and all that came meanwhile are taken.
        """
        loop = asyncio.get_running_loop()
        pushed = self._pump is not None and not self._pump.done()
        deadline = loop.time() + (self.idle_seconds if pushed else self.poll_seconds)
        while loop.time() < deadline:
            try:
                message = await asyncio.wait_for(self._inbox.get(), max(0.0, deadline - loop.time()))
            except TimeoutError:
                return []
            if relevant(message):
                await asyncio.sleep(max(0.0, since + self.min_interval - loop.time()))
                got = [message]
                while not self._inbox.empty():
                    got.append(self._inbox.get_nowait())
                return [m for m in got if relevant(m)]
        return []


async def state_events(
    channel: str,
    read: Callable[[], State | None],
    *,
    relevant: Callable[[dict[str, Any], State], bool] = lambda message, state: True,
    is_over: Callable[[State], bool] = lambda state: False,
    poll_seconds: float = POLL_SECONDS,
    idle_seconds: float = IDLE_SECONDS,
    min_interval: float = MIN_INTERVAL_SECONDS,
    keepalive_seconds: float = KEEPALIVE_SECONDS,
    max_seconds: float = MAX_SECONDS,
) -> AsyncIterator[str]:
    """The SSE body: ``update`` with the state read by ``read`` each time it changed, ``end`` when over.

    ``relevant(message, last_state)`` says whether a message on ``channel`` may concern this
    state (a sweep follows its project's channel and only its own runs' announcements).
    """
    loop = asyncio.get_running_loop()
    read_async = sync_to_async(read, thread_sensitive=False)
    yield "retry: 3000\n\n"
    timings = {"poll_seconds": poll_seconds, "idle_seconds": idle_seconds, "min_interval": min_interval}
    async with Announcements(channel, **timings) as news:
        state = await read_async()
        last: State | None = None
        sent = 0
        started = last_read = last_event = loop.time()
        while True:
            if state is None:
                yield sse("end", {"status": "deleted"})
                return
            if state != last:
                sent += 1
                last = state
                last_event = loop.time()
                yield sse("update", state, event_id=str(sent))
            if is_over(state):
                yield sse("end", state)
                return
            if loop.time() - started >= max_seconds:
                return
            await news.gather(lambda message, state=state: relevant(message, state), since=last_read)
            state = await read_async()
            last_read = loop.time()
            if state == last and loop.time() - last_event >= keepalive_seconds:
                last_event = loop.time()
                yield ": keepalive\n\n"  # keeps proxies from closing an idle stream
