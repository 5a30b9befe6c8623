"""What an external run's client sends, read as hostile input: points, log lines, events, params.

Each reader returns rows every layer below stores as they are, or raises ``InputError``
keyed by the item's place in the request (``points[3].step``), at most ``MAX_ERRORS`` of
them. The JSON body was already checked whole (``webapp.api.body``): no NaN or Infinity
tokens, integers within BIGINT, no NUL or lone surrogates.
"""

from __future__ import annotations

import math
import time
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from modelcore.events import check_event
from webapp.annotations.services import clean_tags
from webapp.input_errors import InputError
from webapp.metrics.services import Point
from webapp.whole_numbers import BIGINT_MAX

# One request's points: a client batches by time (the SDK sends at most 1,000 events a
# request), a catch-up sends many requests. Past this the request is refused whole.
MAX_POINTS = 10_000
MAX_EVENTS = 5_000
# One request's sample rows (prompt, continuation): the trainer samples a few prompts a time.
MAX_SAMPLE_ROWS = 1_000
MAX_LOGS = 1_000
KEY_MAX_LENGTH = 200  # MetricPoint.key
MESSAGE_MAX_LENGTH = 100_000
MAX_PARAMS = 1_000
CHECKPOINT_PATH_MAX_LENGTH = 500  # Checkpoint.path
PARAM_KEY_MAX_LENGTH = 250
PARAM_VALUE_MAX_LENGTH = 6_000
# The keys a run's ``last_loss`` (lists, summaries) is read from: the trainer's, then the usual.
LOSS_KEYS = ("train/loss", "loss")
LOG_LEVELS = ("debug", "info", "warning", "error")
MAX_ERRORS = 20


@dataclass
class Report:
    """One request's rows, ready for ``webapp.external.services.record``."""

    points: list[Point] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)  # {"seq"?, "time", "level", "message"}
    # {"step", "path"}: saved on the client's machine; listed on the run page, never read.
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    # sample events as the trainer writes them ({"step", "time", "samples": [{prompt, text}]}).
    samples: list[dict[str, Any]] = field(default_factory=list)
    final: tuple[str, str] | None = None  # (status, error) the client ended the run with

    def progress(self) -> tuple[int | None, float | None]:
        """The batch's highest step and the loss logged at it (None when it logged none)."""
        if not self.points:
            return None, None
        step = max(p.step for p in self.points)
        loss = None
        for key in LOSS_KEYS:
            at_step = [
                p.value for p in self.points if p.key == key and p.step == step and p.value is not None
            ]
            if at_step:
                loss = at_step[-1]
                break
        return step, loss


class _Errors:
    def __init__(self) -> None:
        self.errors: dict[str, str] = {}

    def add(self, path: str, message: str) -> None:
        if len(self.errors) < MAX_ERRORS:
            self.errors.setdefault(path, message)

    def raise_any(self) -> None:
        if self.errors:
            raise InputError(self.errors)


def too_many(field_name: str, count: int, limit: int) -> InputError:
    return InputError(
        {
            field_name: f"{count} items in one request; send at most {limit} (split the batch into several requests)"
        }
    )


def key_problem(key: object) -> str | None:
    """What is wrong with a metric key, or None. Printable text only: a key is shown and put in URLs."""
    if not isinstance(key, str):
        return "must be a string, e.g. train/loss"
    if not key.strip():
        return "must not be empty"
    if len(key) > KEY_MAX_LENGTH:
        return f"must be at most {KEY_MAX_LENGTH} characters"
    if key != key.strip():
        return "must not start or end with white space"
    if any(unicodedata.category(ch).startswith("C") for ch in key):
        return "must not contain control or invisible format characters"
    return None


def _step(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and 0 <= value <= BIGINT_MAX:
        return value
    return None


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _objects(
    items: list[Any], name: str, most: int, fields: tuple[str, ...], example: str, errors: _Errors
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each item of a batch that is an object of known ``fields``, with its path; the rest are errors."""
    if len(items) > most:
        raise too_many(name, len(items), most)
    for i, item in enumerate(items):
        at = f"{name}[{i}]"
        if not isinstance(item, dict):
            errors.add(at, f"must be an object like {example}")
            continue
        unknown = sorted(set(item) - set(fields))
        if unknown:
            errors.add(f"{at}.{unknown[0]}", f"unknown field; expected {', '.join(fields)}")
            continue
        yield at, item


def read_points(items: list[Any], name: str = "points") -> list[Point]:
    """``[{"key", "step", "value", "time"?}, ...]`` as points; ``value`` null is a gap (as NaN is)."""
    errors = _Errors()
    now = time.time()
    points: list[Point] = []
    example = '{"key": "loss", "step": 10, "value": 1.2}'
    for at, item in _objects(items, name, MAX_POINTS, ("key", "step", "value", "time"), example, errors):
        problem = key_problem(item.get("key"))
        if problem:
            errors.add(f"{at}.key", problem)
        step = _step(item.get("step"))
        if step is None:
            errors.add(f"{at}.step", f"must be a whole number from 0 to {BIGINT_MAX}")
        value = item.get("value")
        if value is not None and not _number(value):
            errors.add(f"{at}.value", "must be a number, or null for a missing value")
        stamp = item.get("time", now)
        if stamp is None:
            stamp = now
        if not _number(stamp) or not math.isfinite(float(stamp)):
            errors.add(f"{at}.time", "must be a number of seconds since 1970 (unix time)")
        if not errors.errors:
            points.append(Point(item["key"], step, None if value is None else float(value), float(stamp)))
    errors.raise_any()
    return points


def read_logs(items: list[Any], name: str = "logs") -> list[dict[str, Any]]:
    """``[{"message", "level"?, "time"?, "seq"?}, ...]``; a line with ``seq`` replaces the run's line of that seq."""
    errors = _Errors()
    logs = []
    example = '{"message": "epoch 1 done", "level": "info"}'
    for at, item in _objects(items, name, MAX_LOGS, ("message", "level", "time", "seq"), example, errors):
        message, level = item.get("message"), item.get("level", "info")
        if not isinstance(message, str):
            errors.add(f"{at}.message", "must be a string")
        elif len(message) > MESSAGE_MAX_LENGTH:
            errors.add(f"{at}.message", f"must be at most {MESSAGE_MAX_LENGTH} characters")
        if level not in LOG_LEVELS:
            errors.add(f"{at}.level", f"must be one of {', '.join(LOG_LEVELS)}")
        stamp = item.get("time")
        if stamp is not None and not _number(stamp):
            errors.add(f"{at}.time", "must be a number of seconds since 1970 (unix time)")
        seq = item.get("seq")
        if seq is not None and (_step(seq) is None or seq < 1):
            errors.add(f"{at}.seq", f"must be a whole number from 1 to {BIGINT_MAX}")
        if not errors.errors:
            logs.append({"seq": seq, "time": float(stamp or time.time()), "level": level, "message": message})
    errors.raise_any()
    return logs


def read_events(items: list[Any], current_step: int, name: str = "events") -> Report:
    """Trainer events (``modelcore.events``, the lines of an ``events.jsonl``) as one report.

    The SDK sends these, and ``runwright sync`` the lines of its spooled file, so a run
    uploaded later holds what it would have held live. Unlike the supervisor's reader,
    which skips a bad line so training goes on, a request with a bad event is refused
    whole: its client is there to hear it. System stats are placed at the latest step seen,
    as the ingester places them; sample events are stored as the trainer's are (the run
    page's samples table). Checkpoint events are stored as the run's external
    checkpoints: listed with their path, which is on the client's machine (Runwright neither
    reads nor resumes from it).
    """
    if len(items) > MAX_EVENTS:
        raise too_many(name, len(items), MAX_EVENTS)
    errors = _Errors()
    report = Report()
    step = current_step
    sample_rows = 0
    for i, item in enumerate(items):
        at = f"{name}[{i}]"
        if not isinstance(item, dict):
            errors.add(at, "must be an event object (a line of events.jsonl)")
            continue
        reason = check_event(item)
        if reason:
            errors.add(at, reason)
            continue
        kind, stamp = item["type"], item.get("time") or time.time()
        if kind in ("metric", "eval", "system"):
            step = item["step"] if kind != "system" else step
            for key, value in item["values"].items():
                problem = key_problem(key)
                if problem:
                    errors.add(f"{at}.values.{key[:40]}", f"metric key {problem}")
                report.points.append(Point(key, step, value, stamp))
        elif kind == "log":
            level = item.get("level") or "info"
            if level not in LOG_LEVELS:
                errors.add(f"{at}.level", f"must be one of {', '.join(LOG_LEVELS)}")
            report.logs.append(
                {"seq": item["seq"], "time": stamp, "level": level, "message": item["message"]}
            )
        elif kind == "checkpoint":
            if len(item["path"]) > CHECKPOINT_PATH_MAX_LENGTH:
                errors.add(f"{at}.path", f"must be at most {CHECKPOINT_PATH_MAX_LENGTH} characters")
            report.checkpoints.append({"step": item["step"], "path": item["path"]})
        elif kind == "sample":  # check_event has checked and repaired its rows
            report.samples.append({"step": item["step"], "time": stamp, "samples": item["samples"]})
            sample_rows += len(item["samples"])
            if sample_rows > MAX_SAMPLE_ROWS:
                raise too_many(f"{name} (their samples)", sample_rows, MAX_SAMPLE_ROWS)
        elif kind == "status" and item["status"] != "running":
            if item["status"] not in ("completed", "failed", "cancelled"):
                errors.add(f"{at}.status", "must be running, completed, failed or cancelled")
            else:
                report.final = (item["status"], item.get("error") or "")
        if len(report.points) > MAX_POINTS:
            raise too_many(f"{name} (their values)", len(report.points), MAX_POINTS)
    errors.raise_any()
    return report


def read_params(config: object, name: str = "config") -> dict[str, Any]:
    """A client's config or params as one flat level: ``{"optim": {"lr": 0.1}}`` → ``{"optim.lr": 0.1}``.

    Stored as the run's config ``{"params": {...}}``: one section, so the compare page
    lines up external runs' params as it does launched runs' config fields.
    """
    if not isinstance(config, dict):
        raise InputError({name: 'must be an object, e.g. {"lr": 0.001, "batch_size": 32}'})
    flat: dict[str, Any] = {}
    errors = _Errors()
    stack: list[tuple[str, Any]] = [(str(k), v) for k, v in config.items()]
    while stack:
        key, value = stack.pop(0)
        if isinstance(value, dict) and value:
            stack.extend((f"{key}.{k}", v) for k, v in value.items())
            continue
        if not key.strip() or len(key) > PARAM_KEY_MAX_LENGTH:
            errors.add(f"{name}.{key[:40]}", f"a name of 1 to {PARAM_KEY_MAX_LENGTH} characters")
            continue
        if isinstance(value, str) and len(value) > PARAM_VALUE_MAX_LENGTH:
            errors.add(f"{name}.{key}", f"must be at most {PARAM_VALUE_MAX_LENGTH} characters")
            continue
        flat[key] = value
        if len(flat) > MAX_PARAMS:
            raise InputError(
                {name: f"more than {MAX_PARAMS} params; log the rest as an artifact of your own"}
            )
    errors.raise_any()
    return flat


def read_tags(tags: object) -> list[str]:
    """Tags as the run's tags take them (``webapp.annotations``); none is an empty list."""
    if tags is None or tags == []:
        return []
    return clean_tags(tags)
