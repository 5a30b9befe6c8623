"""The event stream a trainer leaves in its run directory (``events.jsonl``).

Rank 0 appends one JSON object per line and flushes it; the supervisor tails
the file from a byte offset. A torn last line (a crash mid-write) has no
newline yet and is left for the next read, so readers only ever consume whole
lines. This module imports no torch: the web and the workers use it too.

The reader checks every line against the schema below and hands back only
events whose fields can be stored as they are; any other line (not JSON, not
an object, a step that is not a whole number, a value that is not a number, a
line over ``MAX_LINE_BYTES``) comes back as a ``BadLine`` naming where it is
and what is wrong, so one bad line costs that line and nothing else.

The kinds (``EVENT_TYPES``), beside DESIGN.md's metric, log, checkpoint, status and system:

```
{"seq": 22, "time": ..., "type": "eval", "step": 200, "values": {"eval/hellaswag/acc": 0.31}}
{"seq": 23, "time": ..., "type": "sample", "step": 200,
 "samples": [{"prompt": "def ", "text": "main(): ..."}, ...]}   # train.sample_every
```

System values are named ``system/<metric>/rank<N>`` (modelcore.system_metrics).
"""

from __future__ import annotations

import json
import math
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

try:  # the fast parser the project depends on; the engine used on its own reads with json alone
    import orjson
except ImportError:  # pragma: no cover - exercised by test_events with orjson hidden
    orjson = None  # type: ignore[assignment]

EVENTS_FILE = "events.jsonl"
EVENT_TYPES = ("metric", "log", "checkpoint", "status", "system", "eval", "sample")
# What one sample event may hold: the prompts of train.sample_prompts and their continuations.
MAX_SAMPLE_TEXT = 8_000
FINAL_STATUSES = ("completed", "failed", "cancelled")
LOG_LEVELS = ("debug", "info", "warning", "error")

# Steps and sequence numbers are stored as signed 64-bit integers (PostgreSQL bigint).
MAX_INT64 = 2**63 - 1
# A longer line is skipped unread: no event the trainer writes comes near it (a failure's
# traceback is tens of kilobytes; the writer shortens text fields to fit).
MAX_LINE_BYTES = 1 << 20
# The writer starts every line with its seq, so even a line that no longer parses says
# which event it was (a torn line; the head of a line over the size limit).
_SEQ_HEAD = re.compile(rb'^\s*\{\s*"seq"\s*:\s*(\d{1,18})\s*[,}]')
_HEAD_BYTES = 64
_SCAN_BYTES = 1 << 20
# Lines are parsed with orjson (a fifth of json's time), whose answer is json's for every
# line it accepts but two kinds: an integer past 64 bits (orjson makes it a float; json an
# int, which the checks and warnings treat differently) and nesting deeper than json's
# recursion limit (json refuses it). Lines that may hold either take json's path, as does
# every line orjson refuses (not JSON at all, or what only json accepts: NaN, Infinity,
# 1e999, a byte order mark, lone surrogates), so every line reads as json reads it.
# An integer of 64 bits or more has 19 digits or more: a run of them is found by mapping every
# digit to "0" and the rest to " " (a regular expression took half the time of parsing).
_DIGITS_AS_ZEROS = bytes(0x30 if 0x30 <= i <= 0x39 else 0x20 for i in range(256))
_LONG_DIGITS = b"0" * 19
_FAST_NESTING = 256  # brackets a line may hold for orjson: far below json's recursion limit


class EventWriter:
    """Appends events to ``run_dir/events.jsonl``; sequence numbers continue across resumes."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.path = Path(run_dir) / EVENTS_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._seq = _last_seq(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the run
        if _ends_torn(self.path):
            # A crash left half a line: end it, so our first event is not glued onto it.
            self._file.write("\n")
            self._file.flush()

    def write(self, type: str, **fields: Any) -> dict[str, Any]:
        if type not in EVENT_TYPES:
            raise ValueError(f"event type must be one of {EVENT_TYPES}, got {type!r}")
        self._seq += 1
        event = {"seq": self._seq, "time": round(time.time(), 3), "type": type, **fields}
        self._file.write(_fit_line(event) + "\n")
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

    def sample(self, step: int, samples: list[tuple[str, str]]) -> dict[str, Any]:
        """The model's continuations of the sample prompts at ``step``, as ``(prompt, text)`` pairs."""
        rows = [{"prompt": p[:MAX_SAMPLE_TEXT], "text": t[:MAX_SAMPLE_TEXT]} for p, t in samples]
        return self.write("sample", step=int(step), samples=rows)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class BadLine:
    """A whole line the reader skipped: where it starts, its seq when it still shows one, and why."""

    offset: int  # byte offset of the line's first byte
    end: int  # byte offset just past its newline
    seq: int | None
    reason: str
    event: dict[str, Any] | None = None  # the parsed object, when it was one (its time, type)


@dataclass(frozen=True)
class EventBatch:
    events: list[dict[str, Any]]  # checked and normalised (see check_event), in file order
    offset: int  # byte offset just past the last whole line read
    bad_lines: list[BadLine] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # per event: its line's start and end

    @property
    def skipped(self) -> int:
        return len(self.bad_lines)


def read_events(
    path: str | os.PathLike[str],
    offset: int = 0,
    max_bytes: int = 8 * 1024 * 1024,
    max_line_bytes: int = MAX_LINE_BYTES,
) -> EventBatch:
    """Read whole lines from ``offset``; a torn last line is left for the next call.

    At most ``max_bytes`` are read (keep it above ``max_line_bytes``: a line that does not
    fit waits); a line longer than ``max_line_bytes`` is skipped by scanning for its end,
    never read whole.
    """
    events: list[dict[str, Any]] = []
    spans: list[tuple[int, int]] = []
    bad: list[BadLine] = []
    try:
        f = open(path, "rb")  # noqa: SIM115 - closed below; the scan for a long line needs it open
    except FileNotFoundError:
        return EventBatch([], offset)
    with f:
        f.seek(offset)
        chunk = f.read(max_bytes)
        # One search of the whole chunk: almost always no line needs a look of its own.
        long_digits = _has_long_digits(chunk)
        pos = 0
        while (newline := chunk.find(b"\n", pos)) >= 0:
            line, start, end = chunk[pos:newline], offset + pos, offset + newline + 1
            pos = newline + 1
            if len(line) > max_line_bytes:
                bad.append(_too_long(line[:_HEAD_BYTES], start, end, max_line_bytes))
                continue
            if not line.strip():
                continue
            event, problem = _parse(line, long_digits and _has_long_digits(line))
            if event is not None:
                events.append(event)
                spans.append((start, end))
            else:
                bad.append(BadLine(start, end, _line_seq(line, problem), problem.reason, problem.event))
        if len(chunk) - pos > max_line_bytes:
            # A line already over the limit with no end in this chunk: find its end
            # without holding it, and skip it. Still unended, it waits for the next call.
            start = offset + pos
            end = _end_of_line(f, offset + len(chunk))
            if end is not None:
                bad.append(_too_long(chunk[pos : pos + _HEAD_BYTES], start, end, max_line_bytes))
                pos = end - offset
    return EventBatch(events, offset + pos, bad, spans)


@dataclass(frozen=True)
class _Problem:
    reason: str
    event: dict[str, Any] | None = None


_NO_PROBLEM = _Problem("")


def parse_line(line: bytes) -> tuple[dict[str, Any] | None, _Problem]:
    """One line as a checked event, or None and what is wrong with it."""
    return _parse(line, _has_long_digits(line))


def _has_long_digits(data: bytes) -> bool:
    # By blocks that overlap by a run's length less one: a copy of a whole 8 MiB read would
    # double what a read holds in memory.
    step = 1 << 16
    reach = step + len(_LONG_DIGITS) - 1
    return any(
        _LONG_DIGITS in data[i : i + reach].translate(_DIGITS_AS_ZEROS) for i in range(0, len(data), step)
    )


def _parse(line: bytes, long_digits: bool) -> tuple[dict[str, Any] | None, _Problem]:
    """``parse_line``, told whether the line may hold an integer of 64 bits or more."""
    if (
        orjson is None
        or long_digits
        or (len(line) > _FAST_NESTING and line.count(b"{") + line.count(b"[") > _FAST_NESTING)
    ):
        return _parse_slowly(line)
    try:
        event = orjson.loads(line)
    except orjson.JSONDecodeError:  # json's answer: its reason, or what only json accepts
        return _parse_slowly(line)
    return _checked(event)


def _parse_slowly(line: bytes) -> tuple[dict[str, Any] | None, _Problem]:
    try:
        event = json.loads(line)
    except UnicodeDecodeError:
        return None, _Problem("not valid UTF-8")
    except (ValueError, RecursionError) as exc:
        return None, _Problem(f"not valid JSON ({_short(exc)})")
    return _checked(event)


def _checked(event: Any) -> tuple[dict[str, Any] | None, _Problem]:
    if not isinstance(event, dict):
        return None, _Problem(f"a JSON {_JSON_NAMES.get(type(event), 'value')}, not an object")
    reason = check_event(event)
    if reason:
        return None, _Problem(reason, event)
    return event, _NO_PROBLEM


def check_event(event: dict[str, Any]) -> str:
    """Check and normalise ``event`` in place; returns what is wrong with it, "" when nothing.

    Normalised: ``step`` to int, ``time`` to float, metric and system values to float or
    None (NaN and infinities, which the writer also logs as null: a chart shows the gap),
    text with NUL characters or unpaired surrogates (which no database stores) repaired.
    """
    # Each check has a fast case first (the exact types the writer writes, nothing to
    # repair), then the general one; a third of ingestion's time was spent here.
    kind = event.get("type")
    if kind not in EVENT_TYPES:
        return f"type must be one of {', '.join(EVENT_TYPES)} (got {_shown(kind)})"
    seq = event.get("seq")
    if not ((type(seq) is int or _is_int(seq)) and 1 <= seq <= MAX_INT64):
        return f"seq must be a whole number from 1 to {MAX_INT64} (got {_shown(seq)})"
    stamp = event.get("time")
    if stamp is not None and not (type(stamp) is float and stamp - stamp == 0.0):  # not a finite float
        # optional: a point without one is charted by step only
        if not _is_number(stamp) or _finite(stamp) is None:
            return f"time must be a number of seconds (got {_shown(stamp)})"
        event["time"] = float(stamp)
    if kind in _STEPPED:
        step = event.get("step")
        if not (type(step) is int and 0 <= step <= MAX_INT64):
            step = _step(step)
            if step is None:
                return f"step must be a whole number from 0 to {MAX_INT64} (got {_shown(event.get('step'))})"
            event["step"] = step
    if kind in _VALUED:
        values = event.get("values")
        if not isinstance(values, dict):
            return f"values must be an object of numbers (got {_shown(values)})"
        if not _plain_values(values):
            clean: dict[str, float | None] = {}
            for key, value in values.items():
                if value is not None and not _is_number(value):
                    return f"values[{_shown(key)}] must be a number or null (got {_shown(value)})"
                clean[_text(key)] = _finite(value)
            event["values"] = clean
    if kind == "sample":
        problem = _check_samples(event)
        if problem:
            return problem
    for name in _TEXT_FIELDS.get(kind, ()):
        value = event.get(name)
        required = (kind, name) in _REQUIRED_TEXT
        if value is None and not required:
            continue
        if not isinstance(value, str):
            return f"{name} must be a string (got {_shown(value)})"
        event[name] = _text(value)
    return ""


_STEPPED = frozenset(("metric", "eval", "checkpoint", "sample"))
_VALUED = frozenset(("metric", "eval", "system"))
_TEXT_FIELDS = {"log": ("message", "level"), "checkpoint": ("path",), "status": ("status", "error")}
_REQUIRED_TEXT = frozenset((("log", "message"), ("checkpoint", "path"), ("status", "status")))


def _plain_values(values: dict[Any, Any]) -> bool:
    """Whether ``values`` is already as ``check_event`` leaves it: finite floats under keys that
    need no repair (ASCII, no NUL), as the trainer's writer logs them."""
    for key, value in values.items():
        # x - x is 0.0 for a finite float, NaN for NaN and the infinities.
        if type(value) is not float or value - value != 0.0:
            return False
        if type(key) is not str or not key.isascii() or "\x00" in key:
            return False
    return True


def _last_seq(path: Path) -> int:
    """The seq of the file's last event, so an appended run continues the count.

    Lines are read from the end, each by its head: the writer starts every line
    with its seq, so a line too long to parse cheaply, or torn by a crash, still
    counts (its number is spent: reusing it would give two events one seq).
    """
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        for start, end in _lines_backwards(f):
            f.seek(start)
            head = _SEQ_HEAD.match(f.read(min(end - start, _HEAD_BYTES)))
            if head:
                return int(head.group(1))
            if end - start <= _SCAN_BYTES:  # another writer's order of keys: parse it
                f.seek(start)
                try:
                    seq = json.loads(f.read(end - start)).get("seq")
                except (ValueError, AttributeError, RecursionError):
                    continue
                if _is_int(seq) and 1 <= seq <= MAX_INT64:
                    return seq
    return 0


def _lines_backwards(f: Any) -> Iterator[tuple[int, int]]:
    """(start, end) of each line of ``f``, the last first, newline excluded; reads 64 KiB at a time."""
    f.seek(0, os.SEEK_END)
    pos = line_end = f.tell()
    while pos > 0:
        block_start = max(0, pos - 65536)
        f.seek(block_start)
        block = f.read(pos - block_start)
        cut = len(block)
        while (newline := block.rfind(b"\n", 0, cut)) >= 0:
            if block_start + newline + 1 < line_end:
                yield block_start + newline + 1, line_end
            cut, line_end = newline, block_start + newline
        pos = block_start
    if line_end > 0:
        yield 0, line_end


def _ends_torn(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(0, os.SEEK_END)
        if f.tell() == 0:
            return False
        f.seek(-1, os.SEEK_END)
        return f.read(1) != b"\n"


def _fit_line(event: dict[str, Any]) -> str:
    """The event as one JSON line within MAX_LINE_BYTES, shortening a huge message or error.

    A traceback keeps its end (where the exception is), a message its start.
    """
    line = json.dumps(event, default=_json_default, allow_nan=False)
    for name, keep_end in (("error", True), ("message", False)):
        while len(line.encode()) > MAX_LINE_BYTES and isinstance(event.get(name), str) and event[name]:
            text = event[name]
            half = len(text) // 2
            event[name] = ("[…] " + text[-half:]) if keep_end else (text[:half] + " […]")
            if not half:
                event[name] = ""
            line = json.dumps(event, default=_json_default, allow_nan=False)
    if len(line.encode()) > MAX_LINE_BYTES:
        raise ValueError(
            f"a {event['type']} event of {len(line)} bytes is over the {MAX_LINE_BYTES}-byte limit"
        )
    return line


def _too_long(head: bytes, start: int, end: int, limit: int) -> BadLine:
    seq = _SEQ_HEAD.match(head)
    return BadLine(
        start,
        end,
        int(seq.group(1)) if seq else None,
        f"{end - start - 1} bytes, over the {limit}-byte limit",
    )


def _end_of_line(f: Any, position: int) -> int | None:
    """The offset just past the next newline at or after ``position``, reading a block at a time."""
    f.seek(position)
    while block := f.read(_SCAN_BYTES):
        newline = block.find(b"\n")
        if newline >= 0:
            return position + newline + 1
        position += len(block)
    return None


def _line_seq(line: bytes, problem: _Problem) -> int | None:
    if problem.event is not None:
        seq = problem.event.get("seq")
        if _is_int(seq) and 1 <= seq <= MAX_INT64:
            return seq
        return None
    head = _SEQ_HEAD.match(line[:_HEAD_BYTES])
    return int(head.group(1)) if head else None


_JSON_NAMES = {list: "array", str: "string", int: "number", float: "number", bool: "true or false"}


def _check_samples(event: dict[str, Any]) -> str:
    """``samples`` must be a list of ``{"prompt": str, "text": str}``; text repaired as for logs."""
    samples = event.get("samples")
    if not isinstance(samples, list):
        return f"samples must be a list of {{prompt, text}} objects (got {_shown(samples)})"
    clean = []
    for i, row in enumerate(samples):
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "text")):
            return f"samples[{i}] must be an object with string prompt and text (got {_shown(row)})"
        clean.append({k: _text(row[k][:MAX_SAMPLE_TEXT]) for k in ("prompt", "text")})
    event["samples"] = clean
    return ""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _step(value: Any) -> int | None:
    if _is_int(value):
        step = value
    elif isinstance(value, float) and math.isfinite(value) and value.is_integer():
        step = int(value)  # 120.0 from a writer that logs floats: the same step
    else:
        return None
    return step if 0 <= step <= MAX_INT64 else None


def _finite(value: int | float | None) -> float | None:
    if value is None:
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer too large for a float: as infinite as 1e999
        return None
    return number if math.isfinite(number) else None


def _text(value: str) -> str:
    if "\x00" in value:
        value = value.replace("\x00", "\ufffd")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", "replace").decode("utf-8")
    return value


def _shown(value: Any, limit: int = 40) -> str:
    """A value as a warning quotes it: short, and never the whole of a huge one."""
    if isinstance(value, (dict, list)):
        return f"a JSON {'object' if isinstance(value, dict) else 'array'}"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) > 10**30:
        return f"a {len(str(abs(value)))}-digit integer"
    if value is None:
        return "null or nothing"
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 80 else text[:79] + "…"


def _json_default(value: Any) -> Any:
    # numpy and torch scalars come through here without this module importing them.
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
