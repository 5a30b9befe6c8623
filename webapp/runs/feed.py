"""One source of a run's live messages per process, shared by every stream of that run.

Fifty people watching a run cost one Redis subscription (or, without Redis, one
database poll) and one JSON parse per message, not fifty: each stream gets the
messages in its own inbox and forwards them (webapp.runs.stream). Without Redis, or
when Redis goes away, the feed polls the database and sends what it reads in the same
message format as the ingester's (webapp.live), so a stream cannot tell the two apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async

from webapp import live
from webapp.runs.updates import read_updates, start_cursor

log = logging.getLogger(__name__)

# A viewer this far behind (a stalled connection) stops getting messages and catches up
# from the database when it reads again: a slow client never holds memory for long.
INBOX_SIZE = 1000


@dataclass(eq=False)  # hashed by identity: a feed keeps a set of them
class Inbox:
    """One stream's messages; ``overflowed`` says some were dropped and the stream must catch up."""

    queue: asyncio.Queue[dict[str, Any]] = field(default_factory=lambda: asyncio.Queue(INBOX_SIZE))
    overflowed: bool = False

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next message, or None after ``timeout`` seconds without one."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return None


class RunFeed:
    def __init__(self, run_id: int, poll_seconds: float):
        self.run_id = run_id
        self.poll_seconds = poll_seconds
        self.inboxes: set[Inbox] = set()
        self.task = asyncio.ensure_future(self._pump())

    def send(self, message: dict[str, Any]) -> None:
        for inbox in self.inboxes:
            try:
                inbox.queue.put_nowait(message)
            except asyncio.QueueFull:
                inbox.overflowed = True

    async def _pump(self) -> None:
        if live.enabled():
            try:
                async for message in live.listen(self.run_id):
                    self.send(message)
            except Exception:
                log.warning(
                    "live updates of run %s unavailable; polling the database", self.run_id, exc_info=True
                )
                self.send({"run_id": self.run_id})  # a message may have been lost: streams catch up
        await self._poll()

    async def _poll(self) -> None:
        read = sync_to_async(read_updates, thread_sensitive=False)
        cursor = await sync_to_async(start_cursor, thread_sensitive=False)(self.run_id)
        while True:
            points_after, logs_after = cursor.point_seq, cursor.log_id
            try:
                update = await read(self.run_id, cursor)
            except Exception:
                # The database is away: streams wait (their own reads fail the same way).
                log.warning("run %s: live poll failed; trying again", self.run_id, exc_info=True)
                await asyncio.sleep(max(self.poll_seconds, 1.0))
                continue
            if update.payload is not None:
                self.send(
                    {
                        "run_id": self.run_id,
                        "update": update.payload,
                        "points_after": points_after,
                        "points_through": cursor.point_seq,
                        "logs_after": logs_after,
                    }
                )
            if update.caught_up:
                await asyncio.sleep(self.poll_seconds)

    async def aclose(self) -> None:
        self.task.cancel()
        # Bounded: a Redis client caught mid-connect can swallow the cancellation,
        # and a finished stream must never hang on its feed.
        await asyncio.wait([self.task], timeout=2.0)
        if self.task.done() and not self.task.cancelled():
            self.task.exception()  # retrieved, so asyncio does not log it as unhandled


# Per event loop: a feed's task and queues belong to the loop that made them.
_feeds: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, RunFeed]] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def subscribe(run_id: int, *, poll_seconds: float) -> AsyncIterator[Inbox]:
    """An inbox of the run's messages from now on; the feed stops with its last subscriber."""
    feeds = _feeds.setdefault(asyncio.get_running_loop(), {})
    feed = feeds.get(run_id)
    if feed is None or feed.task.done():
        feed = feeds[run_id] = RunFeed(run_id, poll_seconds)
    inbox = Inbox()
    feed.inboxes.add(inbox)
    try:
        yield inbox
    finally:
        feed.inboxes.discard(inbox)
        if not feed.inboxes and feeds.get(run_id) is feed:
            del feeds[run_id]
            await feed.aclose()
