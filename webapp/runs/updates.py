"""A run's updates read from the database: where a live page stands, and what it has not seen.

The stream follows rows in the order they were written, not by step: points by
``MetricPoint.seq`` (renewed on every upsert), log lines by their row id. So a key
logged for a step already sent (``val/loss`` after the validation pass), a step
re-logged by a resumed attempt, and a skip warning are all still sent. The cursor is
sent as each update's SSE ``id``; a reconnecting browser sends it back as
``Last-Event-ID`` and the stream resumes just after it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.db.models import Max

from webapp.live import run_update
from webapp.metrics.models import MetricPoint
from webapp.runs.models import FINAL_STATUSES, Run, RunLog
from webapp.runs.presenters import run_state

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


def start_cursor(run_id: int) -> StreamCursor:
    """A cursor at what the database holds now (a feed sends only what comes after)."""
    last_seq = MetricPoint.objects.filter(run_id=run_id).aggregate(last=Max("seq"))["last"]
    return StreamCursor(point_seq=-1 if last_seq is None else last_seq, log_id=latest_log_id(run_id))


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
    state = run_state(run)
    rows = list(
        MetricPoint.objects.filter(run_id=run_id, seq__gt=cursor.point_seq)
        .order_by("seq")
        .values_list("seq", "key", "step", "value")[:MAX_POINTS_PER_READ]
    )
    entries = list(
        RunLog.objects.filter(run_id=run_id, id__gt=cursor.log_id).order_by("id")[:MAX_LOGS_PER_READ]
    )
    # A full page may leave rows behind; only a short read proves we are caught up.
    caught_up = len(rows) < MAX_POINTS_PER_READ and len(entries) < MAX_LOGS_PER_READ
    if rows:
        cursor.point_seq = rows[-1][0]
    if entries:
        cursor.log_id = entries[-1].id
    changed = state != cursor.last_state
    cursor.last_state = state
    final = run.status in FINAL_STATUSES
    if not (rows or entries or changed):
        return Update(None, final, caught_up)
    return Update(run_update(run, (row[1:] for row in rows), entries), final, caught_up)
