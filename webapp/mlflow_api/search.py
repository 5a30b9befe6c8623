"""The basic part of MLflow's ``search_runs`` filter language, evaluated over runs in Python.

Supported: clauses joined by ``AND``, each ``<entity>.<name> <op> <value>`` with entity
``metrics`` (the latest value; ``= != < <= > >=`` against a number), ``params`` and
``tags`` (``= != LIKE ILIKE`` against a quoted string) and ``attributes`` (``status``,
``run_name``, ``run_id``; strings, as ``params``). A name may be quoted with backticks or
double quotes. Anything else is refused with a message, never guessed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webapp.mlflow_api.protocol import RUN_NAME_TAG, STATUS_TO_MLFLOW, MlflowError
from webapp.runs.models import Run

_CLAUSE = re.compile(
    r"""\s*(?P<entity>metrics?|params?|tags?|attributes?|attr)\.
        (?:`(?P<q1>[^`]+)`|"(?P<q2>[^"]+)"|(?P<name>[\w./:-]+))
        \s*(?P<op>!=|>=|<=|=|>|<|\bILIKE\b|\bLIKE\b)\s*
        (?:'(?P<s1>[^']*)'|"(?P<s2>[^"]*)"|(?P<num>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?))\s*""",
    re.IGNORECASE | re.VERBOSE,
)
_AND = re.compile(r"\s+AND\s+", re.IGNORECASE)
MAX_FILTER_LENGTH = 2000


@dataclass(frozen=True)
class Clause:
    entity: str  # metric, param, tag, attribute
    name: str
    op: str
    value: str | float


def parse(text: str) -> list[Clause]:
    if len(text) > MAX_FILTER_LENGTH:
        raise _bad(f"the filter is longer than {MAX_FILTER_LENGTH} characters")
    if not text.strip():
        return []
    clauses = []
    for part in _AND.split(text.strip()):
        match = _CLAUSE.fullmatch(part)
        if match is None:
            raise _bad(
                f"cannot read {part[:80]!r}: supported are clauses like metrics.loss < 1, params.lr = '0.1', "
                "tags.team = 'x', attributes.status = 'FINISHED', joined by AND"
            )
        entity = match["entity"].lower().rstrip("s")
        entity = "attribute" if entity in ("attribute", "attr") else entity
        name = match["q1"] or match["q2"] or match["name"]
        op = match["op"].upper()
        number = match["num"]
        value: str | float = float(number) if number is not None else (match["s1"] or match["s2"] or "")
        if entity == "metric" and (op in ("LIKE", "ILIKE") or isinstance(value, str)):
            raise _bad(f"metrics.{name}: compare a metric with a number, e.g. metrics.{name} < 0.5")
        if entity != "metric" and op not in ("=", "!=", "LIKE", "ILIKE"):
            raise _bad(f"{entity}s.{name}: only =, !=, LIKE and ILIKE compare strings")
        if entity == "attribute" and name not in ("status", "run_name", "run_id"):
            raise _bad(f"attributes.{name}: supported attributes are status, run_name and run_id")
        clauses.append(Clause(entity, name, op, value if entity == "metric" else str(value)))
    return clauses


def matches(run: Run, clauses: list[Clause], latest: Callable[[Run], dict[str, float | None]]) -> bool:
    if not clauses:
        return True
    metrics = latest(run) if any(c.entity == "metric" for c in clauses) else {}
    config = run.config or {}
    for clause in clauses:
        if clause.entity == "metric":
            actual: Any = metrics.get(clause.name)
        elif clause.entity == "param":
            actual = _text((config.get("params") or {}).get(clause.name))
        elif clause.entity == "tag":
            labels = {RUN_NAME_TAG: run.name, **(config.get("tags") or {})}
            actual = _text(labels.get(clause.name))
        else:
            actual = {"status": STATUS_TO_MLFLOW[run.status], "run_name": run.name, "run_id": str(run.id)}[
                clause.name
            ]
        if not compare(actual, clause.op, clause.value):
            return False
    return True


def compare(actual: Any, op: str, expected: Any) -> bool:
    if actual is None:
        return False
    if op in ("LIKE", "ILIKE"):
        flags = re.IGNORECASE if op == "ILIKE" else 0
        pattern = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in expected)
        return re.fullmatch(pattern, actual, flags | re.DOTALL) is not None
    return {
        "=": actual == expected,
        "!=": actual != expected,
        ">": actual > expected,
        ">=": actual >= expected,
        "<": actual < expected,
        "<=": actual <= expected,
    }[op]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value if isinstance(value, str) else str(value)


def _bad(message: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", f"filter: {message}")
