"""Event ingestion: new lines of ``events.jsonl`` into the database, then onto the live channel.

Each batch is written in one transaction together with the byte offset just
past it, so the database never holds rows of events it will not re-read or an
offset past events it never stored. After a crash the supervisor re-reads from
the committed offset and the upserts replace the rows they already wrote.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import transaction

from modelcore.events import FINAL_STATUSES, read_events
from webapp import live
from webapp.metrics.services import Point, upsert_points
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus

log = logging.getLogger(__name__)

LOSS_KEY = "train/loss"


@dataclass
class Batch:
    """What one read of the event file held, parsed into rows."""

    offset: int
    points: list[Point] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    step: int | None = None
    last_loss: float | None = None
    running: bool = False
    final_status: dict[str, Any] | None = None
    skipped: int = 0
    lost_ownership: bool = False


def parse_events(events: list[dict[str, Any]], offset: int, current_step: int) -> Batch:
    """Turn events into rows. ``current_step`` places system stats, which carry no step."""
    batch = Batch(offset=offset)
    step = current_step
    for e in events:
        kind, t = e.get("type"), _float(e.get("time")) or 0.0
        try:
            if kind in ("metric", "eval") and isinstance(e.get("values"), dict) and "step" in e:
                step = int(e["step"])
                for key, value in e["values"].items():
                    batch.points.append(Point(str(key), step, _float(value), t))
                batch.step = step
                if LOSS_KEY in e["values"] and _float(e["values"][LOSS_KEY]) is not None:
                    batch.last_loss = _float(e["values"][LOSS_KEY])
            elif kind == "system" and isinstance(e.get("values"), dict):
                # Stats are sampled in time, not per step: the latest sample within a step wins.
                for key, value in e["values"].items():
                    batch.points.append(Point(str(key), step, _float(value), t))
            elif kind == "log" and "seq" in e:
                batch.logs.append(e)
            elif kind == "checkpoint" and "step" in e:
                batch.checkpoints.append(e)
            elif kind == "status":
                if e.get("status") == RunStatus.RUNNING:
                    batch.running = True
                elif e.get("status") in FINAL_STATUSES:
                    batch.final_status = e
            else:
                batch.skipped += 1
        except (TypeError, ValueError):
            batch.skipped += 1  # a malformed field skips its event, never the batch
    return batch


def ingest_new_events(run: Run, path: Path) -> Batch | None:
    """Read events after ``run.events_offset`` and commit them with the new offset.

    Returns the batch (``lost_ownership`` set and nothing written when the run
    is no longer this attempt's), or None when there was nothing new. Updates
    ``run`` in memory (offset, step, last_loss, status) on success.
    """
    read = read_events(path, run.events_offset)
    if read.offset == run.events_offset:
        return None
    batch = parse_events(read.events, read.offset, run.step)
    batch.skipped += read.skipped
    if batch.skipped:
        log.warning("run %s: skipped %d malformed event line(s)", run.id, batch.skipped)
    progress = transitions.Progress(
        offset=read.offset, step=batch.step, last_loss=batch.last_loss, running=batch.running
    )
    with transaction.atomic():
        if not transitions.record_progress(run.id, run.attempt, progress):
            transaction.set_rollback(True)
            batch.lost_ownership = True
            return batch
        upsert_points(run.id, batch.points)
        transitions.record_logs(run.id, batch.logs)
        transitions.record_checkpoints(run.id, batch.checkpoints)
    run.events_offset = read.offset
    if batch.step is not None:
        run.step = batch.step
    if batch.last_loss is not None:
        run.last_loss = batch.last_loss
    if batch.running and run.status == RunStatus.STARTING:
        run.status = RunStatus.RUNNING
    return batch


def live_message(run: Run, batch: Batch | None = None) -> dict[str, Any]:
    """The message published on ``run:<id>`` (format in ``webapp.live``)."""
    points: dict[str, list[list[Any]]] = {}
    logs: list[dict[str, Any]] = []
    if batch is not None:
        for p in batch.points:
            points.setdefault(p.key, []).append([p.step, p.value])
        logs = [
            {
                "seq": e["seq"],
                "time": e.get("time"),
                "level": e.get("level", "info"),
                "message": e.get("message", ""),
            }
            for e in batch.logs
        ]
    return {
        "run_id": run.id,
        "status": run.status,
        "step": run.step,
        "last_loss": run.last_loss,
        "points": points,
        "logs": logs,
    }


def announce(run: Run, batch: Batch) -> None:
    """Publish an ingested batch; a Redis failure only delays live pages (they re-read the database)."""
    if batch.lost_ownership or not live.enabled():
        return
    _publish(run, live_message(run, batch))


def announce_status(run: Run) -> None:
    if live.enabled():
        _publish(run, live_message(run))


def _publish(run: Run, message: dict[str, Any]) -> None:
    try:
        live.publish(run.id, message)
    except Exception:
        log.warning("run %s: could not publish a live update", run.id, exc_info=True)


def _float(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None
