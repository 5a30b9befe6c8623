"""A run's live update: the one payload live pages get, and its Redis channel ``run:<id>``.

The payload is built here and nowhere else: by the ingester right after it stores a
batch (``workers.ingest``), by the web when it changes a run's status itself, and by
the SSE stream when it catches up from the database. A page gets::

    {"status": "running", "step": 120, "last_loss": 3.91, "cancel_requested": false,
     "error": "", "duration_s": 61.2,
     "points": {"train/loss": [[118, 3.95], [120, 3.91]]},
     "logs": [{"id": 301, "seq": 19, "time": 1764000000.1, "level": "info", "message": "..."}]}

A message on the channel wraps it with where it continues from, so a stream can forward
it as it is when it continues the stream's own cursor, and read the database to catch
up when it does not (a message it missed, one from before it connected)::

    {"run_id": 7, "update": {...}, "points_after": 480, "points_through": 482, "logs_after": 300}

``points_after``/``points_through``: the points are exactly the rows with ``seq`` in
(after, through]; ``logs_after``: the run's last log row id before these logs. None
where the message carries none. A message without ``update`` only says "something
changed": streams read the database.

Every message on a run's channel is also announced, as ``{"run_id": 7}``, on its project's
channel ``project:<id>`` (``project_channel``), which the runs list's stream follows
(``webapp.runs.project_stream``); status writes that publish nothing on the run's channel
announce there too (``announce_run_change``, called by ``webapp.runs.transitions``).

Without ``REDIS_URL`` (embedded mode) nothing is published and streams poll the
database; live updates are a convenience, the database is the record.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from django.conf import settings
from django.db import transaction
from django.db.models import Max

from webapp.metrics.services import WrittenPoints
from webapp.runs.models import Run, RunLog
from webapp.runs.presenters import duration_s, log_line, run_state

log = logging.getLogger(__name__)

_client: redis.Redis | None = None
_client_pid: int | None = None

# A batch with more points than this (a catch-up after a restart, a big upload) is announced
# without them: streams read such a batch from the database rather than over Redis.
MAX_LIVE_POINTS = 5000


@dataclass
class LiveRows:
    """The rows one committed batch wrote, as live pages get them."""

    points: list[tuple[str, int, float | None]] | None  # None: too many, read them from the database
    points_after: int | None
    points_through: int | None
    logs: list[RunLog]
    logs_after: int | None


def last_log_id(run_id: int) -> int:
    """The run's newest log row id (-1 without one): call it before writing logs, for ``rows_written``."""
    return RunLog.objects.filter(run_id=run_id).aggregate(last=Max("id"))["last"] or -1


def rows_written(run_id: int, written: WrittenPoints, logs_after: int | None) -> LiveRows:
    """What a batch's transaction wrote, as live pages get it: the rows as stored, never the input.

    ``written`` is what ``metrics.services.write_points`` returned (the rows as stored, with
    their seqs: reading them back cost a fifth of an ingested batch's time); the logs are
    read back after ``logs_after``. Every writer of points that live pages follow (the
    supervisor's ingester, the external-runs API) builds its update here.
    """
    points: list[tuple[str, int, float | None]] | None = []
    after = through = None
    count = written.count
    if count:
        after, through = written.first_seq - 1, written.first_seq + count - 1
        points = written.rows if count <= MAX_LIVE_POINTS else None
    logs = []
    if logs_after is not None:
        logs = list(RunLog.objects.filter(run_id=run_id, id__gt=logs_after).order_by("id"))
    return LiveRows(points, after, through, logs, logs_after)


def rows_message(run: Run, rows: LiveRows | None) -> dict[str, Any]:
    """The channel message for a committed batch's rows (None: "something changed", streams re-read)."""
    if rows is None or rows.points is None:
        return {"run_id": run.id}
    return run_message(
        run,
        run_update(run, rows.points, rows.logs),
        points_after=rows.points_after,
        points_through=rows.points_through,
        logs_after=rows.logs_after,
    )


def run_update(
    run: Run,
    points: Iterable[tuple[str, int, float | None]] = (),
    logs: Iterable[RunLog] = (),
) -> dict[str, Any]:
    """The payload of one update: the run's state, new ``(key, step, value)`` points, new log rows."""
    pairs: dict[str, list[list[Any]]] = {}
    for key, step, value in points:
        # NaN/inf are stored as NULL; JSON has no NaN either.
        finite = None if value is None or not math.isfinite(value) else value
        pairs.setdefault(key, []).append([step, finite])
    return {
        **run_state(run),
        "duration_s": duration_s(run),
        "points": pairs,
        "logs": [{**log_line(entry), "id": entry.id} for entry in logs],
    }


def run_message(
    run: Run,
    update: dict[str, Any],
    *,
    points_after: int | None = None,
    points_through: int | None = None,
    logs_after: int | None = None,
) -> dict[str, Any]:
    """The channel message around ``update`` (see the module docstring)."""
    return {
        "run_id": run.id,
        "update": update,
        "points_after": points_after,
        "points_through": points_through,
        "logs_after": logs_after,
    }


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


def eval_channel(job_id: int) -> str:
    """An eval job's channel: its state (``webapp.evals.presenters.job_state``) after each change."""
    return f"eval:{job_id}"


def project_channel(project_id: int) -> str:
    """A project's channel: ``{"run_id": id}`` whenever one of its runs changed (the runs list follows it)."""
    return f"project:{project_id}"


@functools.lru_cache(maxsize=4096)
def _project_of(run_id: int) -> int | None:
    # A run never changes project: one read per run and process, not one per batch.
    return Run.objects.filter(pk=run_id).values_list("project_id", flat=True).first()


def publish(run_id: int, message: dict[str, Any]) -> int:
    """Publish ``message`` on the run's channel, and that it changed on its project's; returns the
    number of the run channel's listeners (0 without Redis).

    Both in one round trip to Redis (a pipeline): ingestion publishes after every batch.
    """
    if not enabled():
        return 0
    payload = json.dumps(message, allow_nan=False)
    try:
        project_id = _project_of(run_id)
    except Exception:
        log.warning("run %s: could not announce a change to its project", run_id, exc_info=True)
        project_id = None
    if project_id is None:
        return int(_sync_client().publish(channel(run_id), payload))
    pipe = _sync_client().pipeline(transaction=False)
    pipe.publish(channel(run_id), payload)
    pipe.publish(project_channel(project_id), json.dumps({"run_id": run_id}))
    listeners, _ = pipe.execute()
    return int(listeners)


def announce_run_change(run_id: int) -> None:
    """Say on the run's project channel that it changed, once the current transaction commits.

    For writes of a run's status that publish nothing on its own channel (the beat marking
    it lost, a queued run failed or cancelled, a run queued again): the runs list moves.
    A Redis outage is logged only: the list's stream also reads the database when idle.
    """
    if enabled():
        transaction.on_commit(lambda: _announce_run_change(run_id))


def _announce_run_change(run_id: int) -> None:
    try:
        project_id = _project_of(run_id)
        if project_id is not None:
            publish_to(project_channel(project_id), {"run_id": run_id})
    except Exception:
        log.warning("run %s: could not announce a change to its project", run_id, exc_info=True)


def publish_to(name: str, message: dict[str, Any]) -> int:
    """Publish ``message`` on channel ``name``; returns the number of listeners (0 without Redis)."""
    if not enabled():
        return 0
    return int(_sync_client().publish(name, json.dumps(message, allow_nan=False)))


def listen(run_id: int, *, keepalive_seconds: float | None = None) -> AsyncIterator[dict[str, Any]]:
    """Yield the run's messages as they are published (see ``listen_to``)."""
    return listen_to(channel(run_id), keepalive_seconds=keepalive_seconds)


async def listen_to(name: str, *, keepalive_seconds: float | None = None) -> AsyncIterator[dict[str, Any]]:
    """Yield channel ``name``'s messages as they are published, until the consumer stops iterating.

    With ``keepalive_seconds``, an empty dict is yielded after that long without a
    message, so a consumer can notice a closed connection (the first one also says
    the subscription is in place).
    """
    if not enabled():
        raise RuntimeError("live updates need RUNWRIGHT_REDIS_URL; poll the database instead")
    client = aioredis.Redis.from_url(settings.REDIS_URL)
    pubsub = client.pubsub()
    try:
        await pubsub.subscribe(name)
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
