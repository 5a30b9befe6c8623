"""MLflow's ``experiments/search``: the filter, ``order_by`` and pages over the projects a user sees.

An experiment is a project (``protocol.experiment_json``). The filter and order_by are read
by the runs search's reader with experiments' vocabulary (``search.EXPERIMENTS``): the
attributes ``name``, ``creation_time`` and ``last_update_time``, and ``tags.`` (a project's
one tag is ``runwright.team``, its team's name). With no order_by, MLflow's default: the
most recently updated first; ties by experiment id. Pages are offsets in an opaque
``page_token``, as ``runs/search`` pages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from webapp.mlflow_api import search, selectors
from webapp.mlflow_api.protocol import experiment_json
from webapp.projects.selectors import projects_visible_to

DEFAULT_ORDER = [search.OrderKey(search.ATTRIBUTE, "last_update_time", ascending=False)]


@dataclass
class ExperimentRow:
    """What a filter or an order can read of one experiment, and its answer."""

    id: int
    name: str
    creation_time: int
    last_update_time: int
    tags: dict[str, str] = field(default_factory=dict)
    answer: dict[str, Any] = field(default_factory=dict)

    def value(self, entity: str, name: str) -> tuple[bool, Any]:
        if entity == search.TAG:
            return name in self.tags, self.tags.get(name)
        return True, getattr(self, name)


def _row(answer: dict[str, Any]) -> ExperimentRow:
    return ExperimentRow(
        id=int(answer["experiment_id"]),
        name=answer["name"],
        creation_time=answer["creation_time"],
        last_update_time=answer["last_update_time"],
        tags={tag["key"]: tag["value"] for tag in answer["tags"]},
        answer=answer,
    )


def search_experiments(
    user: AbstractBaseUser, filter_text: str, order_by: Any, *, page_token: Any, limit: int
) -> dict[str, Any]:
    """``{"experiments": [...], "next_page_token"?: ...}`` as MLflow answers it."""
    clauses = search.parse_filter(filter_text, search.EXPERIMENTS)
    order = search.parse_order_by(order_by, search.EXPERIMENTS) or DEFAULT_ORDER
    offset = selectors.page_offset(page_token)
    rows = [_row(experiment_json(p)) for p in projects_visible_to(user).select_related("team")]
    found = search.sorted_by(
        sorted((r for r in rows if search.matches(r, clauses)), key=lambda r: r.id), order
    )
    answer: dict[str, Any] = {"experiments": [r.answer for r in found[offset : offset + limit]]}
    if len(found) > offset + limit:
        answer["next_page_token"] = selectors.page_token(offset + limit)
    return answer
