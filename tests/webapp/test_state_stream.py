"""The state stream behind the sweep and Fleet pages: a busy channel costs one read per interval,
messages that do not concern the state cost none, and a state gone ends the stream."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import redis
from django.conf import settings

from webapp import live
from webapp.state_stream import state_events

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs RUNWRIGHT_REDIS_URL")
CHANNEL = "state-stream-test"


def subscribed() -> bool:
    client = redis.Redis.from_url(settings.REDIS_URL)
    try:
        return dict(client.pubsub_numsub(CHANNEL)).get(CHANNEL.encode(), 0) > 0
    finally:
        client.close()


@needs_redis
@pytest.mark.services
def test_a_busy_channel_is_read_once_per_interval_and_strangers_not_at_all():
    reads: list[float] = []
    counter = {"n": 0}
    reads_after_strangers: list[int] = []

    def read() -> dict:
        reads.append(time.monotonic())
        return {"n": counter["n"]}

    def publish() -> None:
        deadline = time.monotonic() + 10
        while not subscribed():
            assert time.monotonic() < deadline, "the stream never subscribed"
            time.sleep(0.02)
        for _ in range(20):
            live.publish_to(CHANNEL, {"about": "someone else"})
        time.sleep(1.0)  # twice the interval: a read would have happened by now
        reads_after_strangers.append(len(reads))
        counter["n"] = 1
        for _ in range(30):
            live.publish_to(CHANNEL, {"about": "us"})

    async def consume() -> list[dict]:
        got = []
        stream = state_events(
            CHANNEL,
            read,
            relevant=lambda message, state: message.get("about") == "us",
            idle_seconds=60,
            min_interval=0.5,
        )
        try:
            async for chunk in stream:
                if "event: update" in chunk:
                    got.append(json.loads(chunk.split("data: ", 1)[1]))
                    if len(got) == 1:  # the publisher runs beside the stream, not between its events
                        threading.Thread(target=publish, daemon=True).start()
                    else:
                        return got
        finally:
            await stream.aclose()
        return got

    got = asyncio.run(asyncio.wait_for(consume(), timeout=30))
    assert got == [{"n": 0}, {"n": 1}]
    assert reads_after_strangers == [1]  # the 20 announcements about others cost no read
    assert len(reads) == 2  # at connect, then one for the 30 about us


def test_a_state_that_is_gone_ends_the_stream(settings):
    settings.REDIS_URL = ""

    async def consume() -> list[str]:
        return [chunk async for chunk in state_events(CHANNEL, lambda: None)]

    chunks = asyncio.run(asyncio.wait_for(consume(), timeout=10))
    assert chunks[-1].startswith("event: end\n") and '"deleted"' in chunks[-1]
