"""A run's folder on the training machine: ``events.jsonl`` and what the uploader remembers.

``events.jsonl`` is in the format Runwright's own trainer writes (``modelcore.events``: one
JSON object per line, ``{"seq", "time", "type", ...}``, NaN and infinities as null), so the
folder is a complete record of the run whether or not the server ever saw it. Next to it,
``run.json`` says where the run goes (server, project, name, config, tags) and, once
created there, its id; ``upload.json`` holds the byte offset of the file up to which the
server has acknowledged every event.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from pathlib import Path
from typing import Any

EVENTS_FILE = "events.jsonl"
RUN_FILE = "run.json"
UPLOAD_FILE = "upload.json"
# The trainer's limit for one line; a longer one would be skipped by every reader.
MAX_LINE_BYTES = 1 << 20
_SEQ_HEAD = re.compile(rb'^\s*\{\s*"seq"\s*:\s*(\d{1,18})\s*[,}]')


def clean_values(values: dict[str, Any]) -> tuple[dict[str, float | None], int]:
    """Numbers as floats (NaN and infinities as None); returns them and how many values were not numbers.

    Any object with ``item()`` (numpy or torch scalars) or ``__float__`` counts as a number.
    """
    clean: dict[str, float | None] = {}
    bad = 0
    for key, value in values.items():
        if hasattr(value, "item"):
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(value)
            except (TypeError, ValueError):
                bad += 1
                continue
        number = float(value)
        clean[str(key)] = number if math.isfinite(number) else None
    return clean, bad


def event_line(event: dict[str, Any]) -> bytes:
    """One event as the trainer writes it, shortening a huge message to fit the line limit."""
    line = json.dumps(event, allow_nan=False)
    while len(line.encode()) > MAX_LINE_BYTES and isinstance(event.get("message"), str) and event["message"]:
        half = len(event["message"]) // 2
        event["message"] = event["message"][:half] + " […]" if half else ""
        line = json.dumps(event, allow_nan=False)
    return line.encode() + b"\n"


class EventFile:
    """Appends events to ``DIR/events.jsonl``; seqs continue those already in the file."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.seq = last_seq(self.path)
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the run
        if self._file.tell() and not _ends_with_newline(self.path):
            self._file.write(b"\n")  # a crash left half a line: ours must not be glued onto it

    def append(self, kind: str, fields: dict[str, Any], stamp: float | None = None) -> dict[str, Any]:
        self.seq += 1
        event = {"seq": self.seq, "time": round(stamp if stamp is not None else time.time(), 3), "type": kind}
        event.update(fields)
        self._file.write(event_line(event))
        return event

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_lines(path: Path, offset: int, max_events: int, max_bytes: int) -> tuple[list[bytes], int]:
    """Whole lines from ``offset``, as bytes: (lines, offset past the last line read). A torn last line waits."""
    lines: list[bytes] = []
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            size = 0
            while len(lines) < max_events and size < max_bytes:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break
                offset += len(line)
                size += len(line)
                if line.strip():
                    lines.append(line.rstrip(b"\n"))
    except FileNotFoundError:
        pass
    return lines, offset


def parsed(lines: list[bytes]) -> list[dict[str, Any]]:
    """The lines that are JSON objects (a torn line left by a crash, or a hand edit, is not)."""
    events = []
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def last_seq(path: Path) -> int:
    """The highest seq in the file (0 for none): a reopened run continues the count.

    Every line starts with its seq, so a torn line (a crash mid-write) still shows it: its
    number is not given again, as the trainer's writer does.
    """
    seq = 0
    try:
        with open(path, "rb") as f:
            for line in f:
                head = _SEQ_HEAD.match(line)
                if head:
                    seq = max(seq, int(head.group(1)))
    except FileNotFoundError:
        pass
    return seq


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Replace the file atomically: a crash leaves the old or the new one, never half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)
