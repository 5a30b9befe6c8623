"""MLflow's tracking REST API, the part an MLflow client's logging uses, over Runwright's runs.

Served under ``/api/2.0/mlflow/`` and ``/ajax-api/2.0/mlflow/``, so a script with
``MLFLOW_TRACKING_URI=<runwright>`` and ``MLFLOW_TRACKING_TOKEN=<a Runwright API token>``
logs into Runwright unchanged. An experiment is a project of the same name, an MLflow run
an external run (``webapp.external``: the same writes, summaries and live updates as the
SDK's). Every answer that is not a success has MLflow's shape, ``{"error_code",
"message"}``; a call Runwright does not serve is ``ENDPOINT_NOT_FOUND``, never a 500.

Which project an experiment name means, for a person in several teams: the project of that
name in the first team (by team name, then id) where they are at least a member, else one
they can see in another team; a new experiment is created in that first team.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import Case, IntegerField, Value, When
from django.http import Http404, HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from webapp.accounts.models import ApiToken, Role, Team
from webapp.accounts.selectors import teams_of
from webapp.accounts.services import ensure_personal_team, token_for_secret
from webapp.api.auth import bearer_secret
from webapp.api.body import value_problems
from webapp.external import services
from webapp.external.batches import MAX_POINTS, Report, key_problem
from webapp.external.services import RunEnded
from webapp.input_errors import InputError
from webapp.metrics.models import MetricPoint
from webapp.metrics.services import Point
from webapp.mlflow_api import experiment_search, search, selectors
from webapp.mlflow_api.protocol import (
    MLFLOW_TO_STATUS,
    RUN_NAME_TAG,
    MlflowError,
    double,
    experiment_json,
    int64,
    invalid,
    key_values,
    metric_json,
    not_found,
    run_info,
    run_json,
    runs_json,
    text,
)
from webapp.projects.models import Project
from webapp.projects.selectors import project_for, projects_visible_to
from webapp.projects.services import create_project
from webapp.runs.models import Run, RunStatus
from webapp.runs.selectors import run_for
from webapp.runs.services import set_archived

DEFAULT_EXPERIMENT_ID = "0"  # MLflow's "Default" experiment, used when none was set
DEFAULT_EXPERIMENT_NAME = "Default"
MAX_SEARCH_RESULTS = 1000  # experiments/search's default and most
MAX_RUNS_RESULTS = 50_000  # runs/search: MLflow's default is 1000, its most 50,000
MAX_HISTORY_RESULTS = 25_000

Handler = Callable[[AbstractBaseUser, dict[str, Any]], dict[str, Any]]


# --- experiments ------------------------------------------------------------------------


def _home_team(user: AbstractBaseUser) -> Team:
    """Where a new experiment goes: the first team (by name, then id) where ``user`` may launch."""
    team = teams_of(user, min_role=Role.MEMBER).order_by("name", "id").first()
    return team or ensure_personal_team(user)


def _project_named(user: AbstractBaseUser, name: str) -> Project | None:
    home = teams_of(user, min_role=Role.MEMBER).order_by("name", "id").values_list("id", flat=True).first()
    mine_first = Case(When(team_id=home, then=Value(0)), default=Value(1), output_field=IntegerField())
    return (
        projects_visible_to(user)
        .filter(name=name)
        .select_related("team")
        .order_by(mine_first, "team__name", "team_id", "id")
        .first()
    )


def _experiment(user: AbstractBaseUser, experiment_id: Any, *, create: bool = True) -> Project:
    """The project an experiment id names; "0" is the Default experiment, created on first use
    (unless ``create`` is off: then a 404 before anything made it)."""
    if experiment_id == DEFAULT_EXPERIMENT_ID:
        found = _project_named(user, DEFAULT_EXPERIMENT_NAME)
        if found is None and not create:
            raise not_found("No Default experiment yet: nothing has been logged to it")
        return found or create_project(user=user, name=DEFAULT_EXPERIMENT_NAME, team=_home_team(user))
    if not isinstance(experiment_id, str | int):
        raise invalid("experiment_id", "is required")
    try:
        return project_for(user, int64(experiment_id, "experiment_id", minimum=1))
    except Http404:
        raise not_found(f"No experiment with id {experiment_id} among your projects") from None


def get_experiment_by_name(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    name = text(data, "experiment_name")
    found = _project_named(user, name)
    if found is None:
        raise not_found(f"No experiment named {name!r} among your projects")
    return {"experiment": experiment_json(found)}


def get_experiment(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    # "0" answers as MLflow's always-present Default experiment (created here on first use).
    return {"experiment": experiment_json(_experiment(user, data.get("experiment_id")))}


def create_experiment(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    name = text(data, "name")
    if _project_named(user, name) is not None:
        raise MlflowError("RESOURCE_ALREADY_EXISTS", f"Experiment {name!r} already exists", 400)
    project = create_project(user=user, name=name, team=_home_team(user))
    return {"experiment_id": str(project.id)}


def search_experiments(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    limit = min(
        int64(data.get("max_results"), "max_results", MAX_SEARCH_RESULTS, minimum=1), MAX_SEARCH_RESULTS
    )
    return experiment_search.search_experiments(
        user,
        text(data, "filter", required=False),
        data.get("order_by"),
        page_token=data.get("page_token"),
        limit=limit,
    )


# --- runs -----------------------------------------------------------------------------------


def _run(user: AbstractBaseUser, data: dict[str, Any]) -> Run:
    run_id = data.get("run_id") or data.get("run_uuid")
    if not isinstance(run_id, str | int) or isinstance(run_id, bool):
        raise invalid("run_id", "is required")
    try:
        return run_for(user, int64(run_id, "run_id", minimum=1))
    except (Http404, MlflowError):
        raise not_found(f"Run {str(run_id)[:40]!r} not found among your runs") from None


def _active_run(user: AbstractBaseUser, data: dict[str, Any]) -> Run:
    """A run to log to: MLflow refuses writes to a deleted (here: archived) run until it is restored."""
    run = _run(user, data)
    if run.archived:
        raise MlflowError(
            "INVALID_PARAMETER_VALUE",
            f"The run {run.id} must be in 'active' lifecycle_stage (it is archived; restore it first).",
        )
    return run


def create_run(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    project = _experiment(user, data.get("experiment_id", DEFAULT_EXPERIMENT_ID))
    labels = key_values(data.get("tags"), "tags")
    name = text(data, "run_name", required=False) or labels.pop(RUN_NAME_TAG, "")
    labels.pop(RUN_NAME_TAG, None)  # the run's name is the tag's value: kept once, as the name
    run = services.create_external_run(user=user, project=project, name=name)
    if labels:
        run = services.set_labels(user=user, run=run, labels=labels)
    return {"run": run_json(run)}


def get_run(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    return {"run": run_json(_run(user, data))}


def update_run(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    """A new status, a new name, or both (``MlflowClient.update_run``, ``end_run``)."""
    run = _active_run(user, data)
    status = text(data, "status", required=False)
    if status not in ("", "RUNNING", "SCHEDULED", *MLFLOW_TO_STATUS):
        raise invalid("status", "must be RUNNING, SCHEDULED, FINISHED, FAILED or KILLED")
    name = text(data, "run_name", required=False)
    if name and name != run.name:
        run = services.rename(user=user, run=run, name=name)
    if status in MLFLOW_TO_STATUS:
        run = services.finish(user=user, run=run, status=MLFLOW_TO_STATUS[status])
    elif status == "RUNNING" and run.status in (RunStatus.RUNNING, RunStatus.LOST):
        run = services.heartbeat(user=user, run=run)
    return {"run_info": run_info(run)}


def delete_run(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    """MLflow's delete is soft (restorable): the run is archived, hidden from searches and lists."""
    set_archived(user=user, run=_run(user, data), archived=True)
    return {}


def restore_run(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    set_archived(user=user, run=_run(user, data), archived=False)
    return {}


def _points(items: Any, field: str = "metrics") -> list[Point]:
    if items is None:
        return []
    if not isinstance(items, list):
        raise invalid(field, "must be a list of metrics")
    if len(items) > MAX_POINTS:
        raise invalid(field, f"{len(items)} metrics in one request; send at most {MAX_POINTS}")
    now_ms = int(time.time() * 1000)
    points = []
    for i, item in enumerate(items):
        at = f"{field}[{i}]"
        if not isinstance(item, dict):
            raise invalid(at, 'must be {"key", "value", "timestamp", "step"}')
        problem = key_problem(item.get("key"))
        if problem:
            raise invalid(f"{at}.key", problem)
        value = double(item.get("value"), f"{at}.value")
        step = int64(item.get("step"), f"{at}.step", 0)
        stamp = int64(item.get("timestamp"), f"{at}.timestamp", now_ms)
        points.append(Point(item["key"], step, value, stamp / 1000))
    return points


def _log(
    user: AbstractBaseUser, run: Run, points: list[Point], params: dict[str, str], labels: dict[str, str]
) -> None:
    """One request's writes, all or none: a refused param leaves the batch's points unwritten."""
    name = labels.pop(RUN_NAME_TAG, None)
    with transaction.atomic():
        if params:
            services.update_params(user=user, run=run, config=params, immutable=True)
        if name is not None and name != run.name:
            services.rename(user=user, run=run, name=name)
        if labels:
            services.set_labels(user=user, run=run, labels=labels)
        if points:
            services.record(user=user, run=run, report=Report(points=points))


def log_batch(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    run = _active_run(user, data)
    _log(
        user,
        run,
        _points(data.get("metrics")),
        key_values(data.get("params"), "params", unique=True),
        key_values(data.get("tags"), "tags"),
    )
    return {}


def log_metric(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    run = _active_run(user, data)
    item = {k: data.get(k) for k in ("key", "value", "timestamp", "step")}
    _log(user, run, _points([item], "metric"), {}, {})
    return {}


def log_param(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    run = _active_run(user, data)
    _log(user, run, [], {text(data, "key"): text(data, "value", required=False)}, {})
    return {}


def set_tag(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    run = _active_run(user, data)
    _log(user, run, [], {}, {text(data, "key"): text(data, "value", required=False)})
    return {}


def delete_tag(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    run = _active_run(user, data)
    key = text(data, "key")
    if key == RUN_NAME_TAG:
        raise invalid("key", f"{RUN_NAME_TAG} is the run's name; rename the run instead")
    if not services.delete_label(user=user, run=run, key=key):
        raise not_found(f"No tag with key={key!r} for run {run.id}")
    return {}


def search_runs(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    ids = data.get("experiment_ids")
    if isinstance(ids, str | int) and not isinstance(ids, bool):
        ids = [ids]
    if not isinstance(ids, list) or not ids:
        raise invalid("experiment_ids", "a non-empty list of experiment ids")
    if len(ids) > 100:
        raise invalid("experiment_ids", "at most 100 experiments in one search")
    # The Default experiment before anything was logged to it has no runs (and is not created by a read).
    projects = [
        _experiment(user, str(i), create=False)
        for i in ids
        if str(i) != DEFAULT_EXPERIMENT_ID or _project_named(user, DEFAULT_EXPERIMENT_NAME) is not None
    ]
    clauses = search.parse_filter(text(data, "filter", required=False))
    order = search.parse_order_by(data.get("order_by"))
    limit = int64(data.get("max_results"), "max_results", 1000, minimum=1)
    if limit > MAX_RUNS_RESULTS:
        raise invalid("max_results", f"must be at most {MAX_RUNS_RESULTS}, got {limit}")
    page = selectors.search_runs(
        user,
        projects,
        clauses,
        order,
        archived=selectors.view_type(data.get("run_view_type")),
        offset=selectors.page_offset(data.get("page_token")),
        limit=limit,
    )
    answer: dict[str, Any] = {"runs": runs_json(page.runs)}
    if page.next_offset is not None:
        answer["next_page_token"] = selectors.page_token(page.next_offset)
    return answer


def get_metric_history(user: AbstractBaseUser, data: dict[str, Any]) -> dict[str, Any]:
    run = _run(user, data)
    key = text(data, "metric_key")
    limit = min(
        int64(data.get("max_results"), "max_results", MAX_HISTORY_RESULTS, minimum=1), MAX_HISTORY_RESULTS
    )
    offset = int64(data.get("page_token") or "0", "page_token", 0)
    points = list(MetricPoint.objects.filter(run=run, key=key).order_by("step")[offset : offset + limit + 1])
    answer: dict[str, Any] = {"metrics": [metric_json(p) for p in points[:limit]]}
    if len(points) > limit:
        answer["next_page_token"] = str(offset + limit)
    return answer


# --- dispatch -------------------------------------------------------------------------------

# path -> (method, handler, writes): ``writes`` is refused for a read-only token.
ENDPOINTS: dict[str, tuple[str, Handler, bool]] = {
    "experiments/get-by-name": ("GET", get_experiment_by_name, False),
    "experiments/get": ("GET", get_experiment, False),
    "experiments/create": ("POST", create_experiment, True),
    "experiments/search": ("POST", search_experiments, False),
    "runs/create": ("POST", create_run, True),
    "runs/get": ("GET", get_run, False),
    "runs/update": ("POST", update_run, True),
    "runs/delete": ("POST", delete_run, True),
    "runs/restore": ("POST", restore_run, True),
    "runs/log-batch": ("POST", log_batch, True),
    "runs/log-metric": ("POST", log_metric, True),
    "runs/log-parameter": ("POST", log_param, True),
    "runs/set-tag": ("POST", set_tag, True),
    "runs/delete-tag": ("POST", delete_tag, True),
    "runs/search": ("POST", search_runs, False),
    "metrics/get-history": ("GET", get_metric_history, False),
}


def error(code: str, message: str, status: int) -> JsonResponse:
    return JsonResponse({"error_code": code, "message": message}, status=status)


@csrf_exempt
def endpoint(request: HttpRequest, path: str) -> JsonResponse:
    found = ENDPOINTS.get(path.strip("/"))
    if found is None:
        return error(
            "ENDPOINT_NOT_FOUND",
            f"Runwright serves part of MLflow's tracking API, not {path[:100]!r}; supported: "
            + ", ".join(sorted(ENDPOINTS)),
            404,
        )
    method, handler, writes = found
    if request.method != method:
        return error("ENDPOINT_NOT_FOUND", f"{path} takes {method}, not {request.method}", 405)
    token = token_for_secret(bearer_secret(request))
    if token is None:
        return error(
            "UNAUTHENTICATED",
            "set MLFLOW_TRACKING_TOKEN to a Runwright API token (create one on your account page "
            "or with `python manage.py create_token USERNAME`)",
            401,
        )
    if writes and _read_only(token):
        return error("PERMISSION_DENIED", "this token is read-only", 403)
    try:
        data = _request_data(request) if method == "POST" else request.GET.dict()
        return JsonResponse(handler(token.user, data))
    except MlflowError as exc:
        return error(exc.code, str(exc), exc.status)
    except InputError as exc:
        detail = "; ".join(f"{k}: {v}" for k, v in exc.errors.items())
        return error("INVALID_PARAMETER_VALUE", detail, 400)
    except RunEnded as exc:
        return error("INVALID_STATE", str(exc), 400)
    except PermissionDenied as exc:
        return error("PERMISSION_DENIED", str(exc) or "permission denied", 403)
    except Http404:
        return error("RESOURCE_DOES_NOT_EXIST", "not found", 404)


def _read_only(token: ApiToken) -> bool:
    return token.read_only


def _request_data(request: HttpRequest) -> dict[str, Any]:
    """The JSON body, checked as every API body is (no NUL, no lone surrogates, BIGINT integers).

    MLflow writes NaN and the infinities as strings; bare ``NaN`` tokens (not JSON, but what
    Python's json writes) are read as those strings too, and become gaps.
    """
    if not request.body:
        return {}
    try:
        data = json.loads(request.body, parse_constant=lambda name: name)
    except (ValueError, RecursionError) as exc:
        raise MlflowError("MALFORMED_REQUEST", f"the body is not valid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise MlflowError("MALFORMED_REQUEST", "the body must be a JSON object")
    problems = value_problems(data)
    if problems:
        raise InputError(problems)
    return data
