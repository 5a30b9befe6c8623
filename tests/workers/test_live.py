"""Live updates over Redis pub/sub: what the supervisor publishes, the SSE view's listener gets."""

from __future__ import annotations

import asyncio

import pytest
from django.conf import settings

from webapp import live

needs_redis = pytest.mark.skipif(not settings.REDIS_URL, reason="needs RUNWRIGHT_REDIS_URL")


@needs_redis
@pytest.mark.services
def test_a_published_message_reaches_a_listener():
    message = {
        "run_id": 424242,
        "status": "running",
        "step": 3,
        "last_loss": 2.5,
        "points": {"train/loss": [[3, 2.5]]},
        "logs": [],
    }

    async def roundtrip():
        stream = live.listen(424242, keepalive_seconds=0.2)
        try:
            assert await anext(stream) == {}  # a keepalive: we are subscribed now
            assert live.publish(424242, message) == 1
            while (got := await anext(stream)) == {}:
                pass
            return got
        finally:
            await stream.aclose()

    assert asyncio.run(asyncio.wait_for(roundtrip(), 10)) == message


def test_without_redis_nothing_is_published(settings):
    settings.REDIS_URL = ""
    assert live.publish(1, {"run_id": 1}) == 0
    with pytest.raises(RuntimeError, match="RUNWRIGHT_REDIS_URL"):
        asyncio.run(anext(live.listen(1)))
