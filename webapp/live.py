"""Live updates of a run over Redis pub/sub, channel ``run:<id>``.

The supervisor publishes each ingested batch; the web's SSE view listens and
forwards. A message is JSON::

    {"run_id": 7, "status": "running", "step": 120, "last_loss": 3.91,
     "points": {"train/loss": [[118, 3.95], [120, 3.91]]},
     "logs": [{"seq": 19, "time": 1764000000.1, "level": "info", "message": "..."}]}

Without ``REDIS_URL`` (embedded mode) nothing is published and pages poll the
database; live updates are a convenience, the database is the record.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings

_client: redis.Redis | None = None
_client_pid: int | None = None


def channel(run_id: int) -> str:
    return f"run:{run_id}"


def enabled() -> bool:
    return bool(settings.REDIS_URL)


def _sync_client() -> redis.Redis:
    global _client, _client_pid
    # One client per process: Celery's prefork children must not share the parent's sockets.
    if _client is None or _client_pid != os.getpid():
        _client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=5, socket_connect_timeout=5)
        _client_pid = os.getpid()
    return _client


def publish(run_id: int, message: dict[str, Any]) -> int:
    """Publish ``message`` on the run's channel; returns the number of listeners (0 without Redis)."""
    if not enabled():
        return 0
    return int(_sync_client().publish(channel(run_id), json.dumps(message, allow_nan=False)))


async def listen(run_id: int, *, keepalive_seconds: float | None = None) -> AsyncIterator[dict[str, Any]]:
    """Yield the run's messages as they are published, until the consumer stops iterating.

    With ``keepalive_seconds``, an empty dict is yielded after that long without a
    message, so an SSE view can write a comment and notice a closed connection.
    """
    if not enabled():
        raise RuntimeError("live updates need RUNWRIGHT_REDIS_URL; poll the database instead")
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(channel(run_id))
        while True:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=keepalive_seconds)
            if message is None:
                if keepalive_seconds is not None:
                    yield {}
                continue
            if message.get("type") != "message":
                continue
            try:
                data = json.loads(message["data"])
            except (ValueError, TypeError):
                continue  # someone else's junk on our channel must not end the stream
            if isinstance(data, dict):
                yield data
    finally:
        await pubsub.aclose()
        await client.aclose()
