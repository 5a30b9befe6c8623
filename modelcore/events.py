"""The event stream a trainer leaves in its run directory (``events.jsonl``).

Rank 0 appends one JSON object per line and flushes it; the supervisor tails
the file from a byte offset. A torn last line (a crash mid-write) has no
newline yet and is left for the next read, so readers only ever consume whole
lines. This module imports no torch: the web and the workers use it too.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
EVENT_TYPES = ("metric", "log", "checkpoint", "status", "system", "eval")
FINAL_STATUSES = ("completed", "failed", "cancelled")
LOG_LEVELS = ("debug", "info", "warning", "error")


class EventWriter:
    """Appends events to ``run_dir/events.jsonl``; sequence numbers continue across resumes."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq = _last_seq(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run

    def write(self, type: str, **fields: Any) -> dict[str, Any]:
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {type!r}")
        self._seq += 1
        event = {"seq": self._seq, "time": round(time.time(), 3), "type": type, **fields}
        self._file.write(json.dumps(event, default=_json_default, allow_nan=False) + "\n")
        self._file.flush()
        return event

    def metric(self, step: int, values: dict[str, float]) -> dict[str, Any]:
        # NaN/inf are not JSON; they are logged as null so a diverging run still
        # leaves a readable file (the trainer reports the divergence separately).
        clean = {k: (float(v) if math.isfinite(float(v)) else None) for k, v in values.items()}
        return self.write("metric", step=int(step), values=clean)

    def log(self, message: str, level: str = "info") -> dict[str, Any]:
        return self.write("log", level=level, message=message)

    def checkpoint(self, step: int, path: str) -> dict[str, Any]:
        return self.write("checkpoint", step=int(step), path=path)

    def status(self, status: str, error: str | None = None, **extra: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {"status": status, **extra}
        if error is not None:
            fields["error"] = error
        return self.write("status", **fields)

    def system(self, values: dict[str, float]) -> dict[str, Any]:
        return self.write("system", values=values)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class EventBatch:
    events: list[dict[str, Any]]
    offset: int  # byte offset just past the last whole line read
    skipped: int  # whole lines that were not valid JSON objects


def read_events(
    path: str | os.PathLike[str], offset: int = 0, max_bytes: int = 8 * 1024 * 1024
) -> EventBatch:
    """Read whole lines from ``offset``; a torn last line is left for the next call."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            chunk = f.read(max_bytes)
    except FileNotFoundError:
        return EventBatch([], offset, 0)
    end = chunk.rfind(b"\n")
    if end < 0:
        return EventBatch([], offset, 0)
    events, skipped = [], 0
    for line in chunk[: end + 1].splitlines():
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            skipped += 1
            continue
        if isinstance(event, dict) and event.get("type") in EVENT_TYPES:
            events.append(event)
        else:
            skipped += 1
    return EventBatch(events, offset + end + 1, skipped)


def _last_seq(path: Path) -> int:
    """The highest ``seq`` already in the file, so an appended run continues the count."""
    if not path.exists():
        return 0
    last = 0
    with open(path, "rb") as f:
        # Only the tail matters: seq is monotonic. 64 KiB holds many lines.
        f.seek(0, os.SEEK_END)
        f.seek(max(0, f.tell() - 65536))
        for line in f.read().splitlines():
            try:
                last = max(last, int(json.loads(line).get("seq", 0)))
            except (ValueError, AttributeError, TypeError):
                continue
    return last


def _json_default(value: Any) -> Any:
    # numpy and torch scalars come through here without this module importing them.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
