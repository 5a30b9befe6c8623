"""MLflow's REST protocol as Runwright speaks it: errors, request fields, and runs as MLflow shows them.

Shapes follow MLflow's ``service.proto`` (REST API docs, 2.x/3.x): errors are
``{"error_code": "INVALID_PARAMETER_VALUE", "message": "..."}``; int64 fields may arrive as
JSON numbers or as decimal strings (the proto3 JSON mapping); doubles may be the strings
``"NaN"``, ``"Infinity"``, ``"-Infinity"``. Ids are Runwright's: an experiment id is a
project id, a run id a run id, both as strings.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from typing import Any

from django.db.models import OuterRef, Subquery

from webapp.external.services import param_text
from webapp.metrics.models import MetricKey, MetricPoint
from webapp.projects.models import Project
from webapp.runs.models import Run, RunStatus
from webapp.whole_numbers import parse_whole_number

# Runwright's statuses as MLflow names them; ``lost`` (no report for too long) has no
# MLflow name and reads as FAILED, which is what a person would conclude.
STATUS_TO_MLFLOW = {
    RunStatus.QUEUED: "SCHEDULED",
    RunStatus.STARTING: "RUNNING",
    RunStatus.RUNNING: "RUNNING",
    RunStatus.COMPLETED: "FINISHED",
    RunStatus.FAILED: "FAILED",
    RunStatus.CANCELLED: "KILLED",
    RunStatus.LOST: "FAILED",
}
MLFLOW_TO_STATUS = {
    "FINISHED": RunStatus.COMPLETED,
    "FAILED": RunStatus.FAILED,
    "KILLED": RunStatus.CANCELLED,
}
RUN_NAME_TAG = "mlflow.runName"
MAX_KEYS_SHOWN = 1000  # a run's latest metrics in get-run: one read per key


class MlflowError(Exception):
    """An answer in MLflow's error shape."""

    def __init__(self, code: str, message: str, status: int = 400):
        super().__init__(message)
        self.code = code
        self.status = status


def invalid(field: str, message: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", f"{field}: {message}")


def not_found(message: str) -> MlflowError:
    return MlflowError("RESOURCE_DOES_NOT_EXIST", message, 404)


def text(data: dict[str, Any], field: str, *, required: bool = True, default: str = "") -> str:
    value = data.get(field)
    if value is None:
        if required:
            raise invalid(field, "is required")
        return default
    if not isinstance(value, str):
        raise invalid(field, "must be a string")
    return value


def int64(value: Any, field: str, default: int | None = None, *, minimum: int = 0) -> int:
    """An int64 field: a JSON integer or its decimal string; ``default`` when absent."""
    if value is None and default is not None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        number = parse_whole_number(str(value))
    elif isinstance(value, str):
        number = parse_whole_number(value)
    else:
        number = None
    if number is None or number < minimum:
        raise invalid(field, f"must be a whole number from {minimum} to 9223372036854775807")
    return number


def double(value: Any, field: str) -> float | None:
    """A double field; NaN and the infinities (as strings or not) are None: a gap, as the trainer's NaN."""
    if isinstance(value, str) and value in ("NaN", "Infinity", "-Infinity"):
        return None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
        return number if math.isfinite(number) else None
    raise invalid(field, 'must be a number (or "NaN")')


def key_values(items: Any, field: str, *, unique: bool = False) -> dict[str, str]:
    """``[{"key", "value"}, ...]`` (params, tags) as a dict; the last value of a key wins, or with
    ``unique`` (params, as MLflow has them) a key sent twice with two values is refused."""
    if items is None:
        return {}
    if not isinstance(items, list):
        raise invalid(field, 'must be a list of {"key": ..., "value": ...}')
    out: dict[str, str] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            raise invalid(f"{field}[{i}]", 'must be {"key": "...", "value": "..."}')
        value = item.get("value", "")
        if not isinstance(value, str):
            value = str(value)
        if unique and out.get(item["key"], value) != value:
            raise invalid(
                f"{field}[{i}]",
                f"Duplicate parameter keys have been submitted: {item['key']!r} with values "
                f"{out[item['key']]!r} and {value!r}",
            )
        out[item["key"]] = value
    return out


def experiment_json(project: Project) -> dict[str, Any]:
    return {
        "experiment_id": str(project.id),
        "name": project.name,
        "artifact_location": "",
        "lifecycle_stage": "active",
        "creation_time": int(project.created_at.timestamp() * 1000),
        "last_update_time": int(project.created_at.timestamp() * 1000),
        "tags": [{"key": "runwright.team", "value": project.team.name}],
    }


def _millis(moment: Any) -> int | None:
    return int(moment.timestamp() * 1000) if moment is not None else None


def run_info(run: Run) -> dict[str, Any]:
    info = {
        "run_id": str(run.id),
        "run_uuid": str(run.id),
        "run_name": run.name,
        "experiment_id": str(run.project_id),
        "user_id": run.created_by.get_username() if run.created_by else "",
        "status": STATUS_TO_MLFLOW[run.status],
        "start_time": start_millis(run),
        "artifact_uri": "",
        # MLflow's deleted runs (hidden, restorable) are Runwright's archived runs.
        "lifecycle_stage": "deleted" if run.archived else "active",
    }
    if run.finished_at is not None:
        info["end_time"] = _millis(run.finished_at)
    return info


def start_millis(run: Run) -> int:
    return int((run.started_at or run.created_at).timestamp() * 1000)


def end_millis(run: Run) -> int | None:
    return _millis(run.finished_at)


def latest_points(run_ids: list[int], keys: Collection[str] | None = None) -> dict[int, list[dict[str, Any]]]:
    """Each run's point at the highest step of every key it logged (or of ``keys``), per run id.

    One query for them all: the run's keys (``MetricKey``), each with its top step's point read
    through the (run, key, step) unique index, never a scan of a run's points.
    """
    if not run_ids:
        return {}
    top = MetricPoint.objects.filter(run=OuterRef("run"), key=OuterRef("key")).order_by("-step")
    rows = MetricKey.objects.filter(run_id__in=run_ids)
    if keys is not None:
        rows = rows.filter(key__in=list(keys))
    rows = rows.annotate(
        step=Subquery(top.values("step")[:1]),
        value=Subquery(top.values("value")[:1]),
        time=Subquery(top.values("time")[:1]),
    ).order_by("run_id", "key")
    found: dict[int, list[dict[str, Any]]] = {}
    for run_id, key, step, value, stamp in rows.values_list("run_id", "key", "step", "value", "time"):
        if step is None or len(found.get(run_id, ())) >= MAX_KEYS_SHOWN:
            continue
        point = {"key": key, "value": value if value is not None else "NaN", "timestamp": int(stamp * 1000)}
        found.setdefault(run_id, []).append({**point, "step": step})
    return found


def latest_metrics(run: Run) -> list[dict[str, Any]]:
    """Each key's point at its highest step (MLflow's "latest" value of a metric)."""
    return latest_points([run.id]).get(run.id, [])


def metric_json(point: MetricPoint) -> dict[str, Any]:
    return {
        "key": point.key,
        "value": point.value if point.value is not None else "NaN",
        "timestamp": int(point.time * 1000),
        "step": point.step,
    }


def run_params(run: Run) -> dict[str, str]:
    return {k: param_text(v) for k, v in ((run.config or {}).get("params") or {}).items()}


def run_tags(run: Run) -> dict[str, str]:
    """The run's MLflow tags; ``mlflow.runName`` is always the run's name (a rename changes both)."""
    labels = {k: param_text(v) for k, v in ((run.config or {}).get("tags") or {}).items()}
    labels[RUN_NAME_TAG] = run.name
    return labels


def run_json(run: Run, metrics: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A run as MLflow shows it; ``metrics`` when already read for many runs (``latest_points``)."""
    return {
        "info": run_info(run),
        "data": {
            "metrics": latest_metrics(run) if metrics is None else metrics,
            "params": [{"key": k, "value": v} for k, v in run_params(run).items()],
            "tags": [{"key": k, "value": v} for k, v in run_tags(run).items()],
        },
        "inputs": {},
    }


def runs_json(runs: list[Run]) -> list[dict[str, Any]]:
    metrics = latest_points([run.id for run in runs])
    return [run_json(run, metrics.get(run.id, [])) for run in runs]
