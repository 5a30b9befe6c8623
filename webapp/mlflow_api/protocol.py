"""MLflow's REST protocol as Runwright speaks it: errors, request fields, and runs as MLflow shows them.

Shapes follow MLflow's ``service.proto`` (REST API docs, 2.x/3.x): errors are
``{"error_code": "INVALID_PARAMETER_VALUE", "message": "..."}``; int64 fields may arrive as
JSON numbers or as decimal strings (the proto3 JSON mapping); doubles may be the strings
``"NaN"``, ``"Infinity"``, ``"-Infinity"``. Ids are Runwright's: an experiment id is a
project id, a run id a run id, both as strings.
"""

from __future__ import annotations

import math
from typing import Any

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


def key_values(items: Any, field: str) -> dict[str, str]:
    """``[{"key", "value"}, ...]`` (params, tags) as a dict; the last value of a key wins."""
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
        "start_time": _millis(run.started_at or run.created_at),
        "artifact_uri": "",
        "lifecycle_stage": "active",
    }
    if run.finished_at is not None:
        info["end_time"] = _millis(run.finished_at)
    return info


def latest_metrics(run: Run) -> list[dict[str, Any]]:
    """Each key's point at its highest step (MLflow's "latest" value of a metric)."""
    rows = []
    keys = MetricKey.objects.filter(run=run).order_by("key").values_list("key", flat=True)[:MAX_KEYS_SHOWN]
    for key in keys:
        point = MetricPoint.objects.filter(run=run, key=key).order_by("-step").first()
        if point is not None:
            rows.append(metric_json(point))
    return rows


def metric_json(point: MetricPoint) -> dict[str, Any]:
    return {
        "key": point.key,
        "value": point.value if point.value is not None else "NaN",
        "timestamp": int(point.time * 1000),
        "step": point.step,
    }


def run_json(run: Run) -> dict[str, Any]:
    config = run.config or {}
    params = [{"key": k, "value": _as_text(v)} for k, v in (config.get("params") or {}).items()]
    labels = dict(config.get("tags") or {})
    labels.setdefault(RUN_NAME_TAG, run.name)
    return {
        "info": run_info(run),
        "data": {
            "metrics": latest_metrics(run),
            "params": params,
            "tags": [{"key": k, "value": _as_text(v)} for k, v in labels.items()],
        },
        "inputs": {},
    }


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "True" if value else "False"
    return "None" if value is None else str(value)
