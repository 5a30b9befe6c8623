"""A list endpoint's pages: ``?limit=`` rows after ``?cursor=``, and the cursor of the next page.

Keyset pagination, as the runs table pages (``webapp.runs.filters``): the cursor carries
the last row's values of the list's ordering (which always ends with the id, so it is a
total order), and the next page is the rows after that tuple. A row added or removed on
an earlier page does not shift the next one, and a page deep in a long list is read from
the index, not counted off. The cursor is opaque to clients (base64 of JSON); a cursor
that is not one of ours is a 400 naming ``cursor``.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from django.core.exceptions import ValidationError
from django.db.models import Model, Q, QuerySet
from ninja import Schema
from pydantic import Field

from webapp.input_errors import InputError

DEFAULT_LIMIT = 50
MAX_LIMIT = 200

M = TypeVar("M", bound=Model)
BAD_CURSOR = "not a cursor of this list: pass next_cursor as given, or none"


class PageQuery(Schema):
    """The query of every paged list."""

    cursor: str = Field("", description="the previous page's next_cursor; empty for the first page")
    limit: int = Field(DEFAULT_LIMIT, ge=1, le=MAX_LIMIT, description="rows per page")


@dataclass(frozen=True)
class Page(Generic[M]):
    rows: list[M]
    next_cursor: str | None


def keyset_page(queryset: QuerySet[M], order: tuple[str, ...], query: PageQuery) -> Page[M]:
    """One page of ``queryset`` ordered by ``order`` (fields, ``-`` for descending, the last ``id``/``-id``)."""
    fields = [name.lstrip("-") for name in order]
    ordered = queryset.order_by(*order)
    if query.cursor:
        try:
            ordered = ordered.filter(_after(order, _decode(query.cursor, len(order))))
        except (ValidationError, ValueError, TypeError):  # a value the field's type refuses
            raise InputError({"cursor": BAD_CURSOR}) from None
    rows = list(ordered[: query.limit + 1])
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    last = rows[-1] if rows and more else None
    return Page(rows, _encode([_value(last, f) for f in fields]) if last is not None else None)


def _value(row: Model, path: str) -> Any:
    value: Any = row
    for part in path.split("__"):
        value = getattr(value, part)
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return value


def _encode(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode(cursor: str, size: int) -> list[Any]:
    problem = InputError({"cursor": BAD_CURSOR})
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = json.loads(raw)
    except (binascii.Error, ValueError):
        raise problem from None
    if not isinstance(values, list) or len(values) != size:
        raise problem
    if not all(isinstance(v, str | int) and not isinstance(v, bool) for v in values):
        raise problem
    if not isinstance(values[-1], int) or not 0 <= values[-1] < 2**63:
        raise problem
    for value in values[:-1]:
        if isinstance(value, str) and ("\x00" in value or len(value) > 400):
            raise problem
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            raise problem
    return values


def _after(order: tuple[str, ...], values: list[Any]) -> Q:
    """Rows after ``values`` in ``order``: (a > x) or (a = x and b > y) or ..."""
    result = Q()
    for i, name in enumerate(order):
        field = name.lstrip("-")
        step = Q(**{f"{field}__{'lt' if name.startswith('-') else 'gt'}": values[i]})
        for prior, value in zip(order[:i], values[:i], strict=True):
            step &= Q(**{prior.lstrip("-"): value})
        result |= step
    return result
