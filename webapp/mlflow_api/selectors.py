"""``runs/search``: the runs of some experiments (projects) one person may see, filtered and ordered
as MLflow does (``webapp.mlflow_api.search``), one page at a time.

Each candidate run is read once as a small row (its attributes, and its params, tags and the
latest value of the metrics the search names only when it names them), the filter and order
are applied to those rows, and only the page's runs are read whole. A metric's latest value is
a correlated subquery through the (run, key, step) unique index, never a scan of the points.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import OuterRef, Subquery
from django.db.models.fields.json import KeyTransform

from webapp.external.services import LABELS_SECTION, PARAMS_SECTION, param_text
from webapp.metrics.models import MetricPoint
from webapp.mlflow_api import search
from webapp.mlflow_api.protocol import RUN_NAME_TAG, STATUS_TO_MLFLOW, MlflowError
from webapp.projects.models import Project
from webapp.runs.models import Run
from webapp.runs.selectors import runs_visible_to

# run_view_type: MLflow's deleted runs are Runwright's archived ones.
VIEW_TYPES = {"ACTIVE_ONLY": False, "DELETED_ONLY": True, "ALL": None, "1": False, "2": True, "3": None}


@dataclass(frozen=True)
class Page:
    runs: list[Run]
    next_offset: int | None  # where the next page starts, None on the last page


def view_type(value: Any) -> bool | None:
    """The archived flag a ``run_view_type`` asks for (None: both); ACTIVE_ONLY when absent."""
    if value is None or value == "":
        return False
    archived = VIEW_TYPES.get(str(value).upper(), "bad")
    if archived == "bad":
        raise MlflowError(
            "INVALID_PARAMETER_VALUE", "run_view_type: must be ACTIVE_ONLY, DELETED_ONLY or ALL"
        )
    return archived  # type: ignore[return-value]


def page_offset(token: Any) -> int:
    """The offset in a ``page_token`` (base64 of ``{"offset": n}``, as MLflow's stores write it)."""
    if token in (None, ""):
        return 0
    try:
        offset = json.loads(base64.b64decode(str(token), validate=True))["offset"]
    except (binascii.Error, ValueError, TypeError, KeyError):
        raise MlflowError("INVALID_PARAMETER_VALUE", "page_token: not a token this server gave") from None
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise MlflowError("INVALID_PARAMETER_VALUE", "page_token: not a token this server gave")
    return offset


def page_token(offset: int) -> str:
    return base64.b64encode(json.dumps({"offset": offset}).encode()).decode()


def search_runs(
    user: AbstractBaseUser,
    projects: Sequence[Project],
    clauses: Sequence[search.Clause],
    order: Sequence[search.OrderKey],
    *,
    archived: bool | None,
    offset: int,
    limit: int,
) -> Page:
    runs = runs_visible_to(user).filter(project__in=list(projects))
    if archived is not None:
        runs = runs.filter(archived=archived)
    entities = {c.entity for c in clauses} | {o.entity for o in order}
    fields: dict[str, Any] = {}
    if search.PARAM in entities:
        fields["p"] = KeyTransform(PARAMS_SECTION, "config")
    if search.TAG in entities:
        fields["t"] = KeyTransform(LABELS_SECTION, "config")
    keys = sorted(search.metric_keys(clauses, order))
    for i, key in enumerate(keys):
        top = MetricPoint.objects.filter(run=OuterRef("pk"), key=key).order_by("-step")
        fields[f"m{i}_step"] = Subquery(top.values("step")[:1])
        fields[f"m{i}_value"] = Subquery(top.values("value")[:1])
    columns = ("id", "name", "status", "created_at", "started_at", "finished_at", "created_by__username")
    rows = [_row(values, keys) for values in runs.values(*columns, **fields)]
    chosen = search.ordered([row for row in rows if search.matches(row, clauses)], order)
    ids = [row.id for row in chosen[offset : offset + limit]]
    by_id = Run.objects.select_related("created_by").in_bulk(ids)
    more = offset + limit < len(chosen)
    return Page([by_id[i] for i in ids if i in by_id], offset + limit if more else None)


def _row(values: dict[str, Any], keys: list[str]) -> search.RunRow:
    started = values["started_at"] or values["created_at"]
    finished = values["finished_at"]
    tags = {k: param_text(v) for k, v in _section(values.get("t")).items()}
    tags[RUN_NAME_TAG] = values["name"]
    metrics = {}
    for i, key in enumerate(keys):
        if values[f"m{i}_step"] is not None:
            metrics[key] = values[f"m{i}_value"]  # None: the point is there, its value NaN
    return search.RunRow(
        id=values["id"],
        run_name=values["name"],
        status=STATUS_TO_MLFLOW[values["status"]],
        user_id=values["created_by__username"] or "",
        start_time=int(started.timestamp() * 1000),
        end_time=int(finished.timestamp() * 1000) if finished is not None else None,
        params={k: param_text(v) for k, v in _section(values.get("p")).items()},
        tags=tags,
        metrics=metrics,
    )


def _section(value: Any) -> dict[str, Any]:
    # A managed run's config has no such section; a value there that is not an object is ignored.
    return value if isinstance(value, dict) else {}
