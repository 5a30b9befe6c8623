"""The runs table's query: which runs, which columns, in which order, one page at a time.

One module parses the query string and builds the queryset, for the project page
(``projects.views``), its live refresh (``runs.json``) and ``GET /api/v1/projects/<id>/runs``
alike, so a filter copied from the address bar means the same everywhere.

The query string (every parameter optional; repeat a parameter or separate values by commas):

- ``status=failed,lost``, ``tag=baseline``, ``preset=tiny-cpu``: any of the values listed;
  ``q=words``: each word is in the name, preset or status; ``archived=1``: archived runs too.
- ``where=model.n_layers>=8``, ``where=val/loss<2.1``: conditions, all of which must hold.
  The left side is a config field (``section.field`` from the config schema) or a metric
  key, optionally with ``:last`` (the default), ``:min`` or ``:max``. Operators:
  ``= == != < <= > >=``; a config value is read as its field's type; a metric's is a number.
- ``columns=model.n_layers,val/loss:min``: columns shown besides the fixed ones.
- ``sort=-val/loss:min``: any fixed column (``name status preset step last_loss duration
  created``) or any column as above; ``-`` sorts descending. Runs without a value come last.
- ``limit`` (1-200, default 50) and ``cursor`` (from the previous page's ``next_cursor``).

Pages are cut by keyset where the sort allows it: the cursor carries the last row's sort
value and id, and the next page is the rows after that pair (``value > v or (value = v and
id > last)``, runs without a value last), read from where the index or the sort stops
instead of counting off every row before it, and a run added or removed on an earlier page
does not shift the next one. That holds for every column whose value is stored (``name
status preset step last_loss created``) and for metric columns. Two sorts keep the plain
offset: ``duration`` (computed from the database's clock, so a running run's value grows
between two pages and no stored pair marks a place) and config fields (JSON values whose
comparison with a bound value differs between PostgreSQL's jsonb and SQLite's JSON text, for
a rarely paged sort). A cursor also carries its position, for "Runs 51-100 of N".

Nothing of the user's text reaches SQL as text: a config path must be a field of the schema,
a metric key is only ever a bound parameter, values are typed first. A bad part is an
``InputError`` naming the parameter.

Metric columns read the metrics app's stored summaries, never the points: ``last`` is the
point at the highest step (one probe of the unique (run, key, step) index), ``min`` and
``max`` come from the coarsest summary level (one row per 16.8M steps), so a 5,000-run
project sorts by ``val/loss:min`` with 5,000 index probes, not a scan of its points.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import math
import re
from dataclasses import dataclass, field, replace
from typing import Any, Literal
from urllib.parse import urlencode

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import (
    DurationField,
    ExpressionWrapper,
    F,
    FloatField,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
)
from django.db.models.fields.json import KeyTransform
from django.db.models.functions import Coalesce, Now
from django.http import QueryDict

from modelcore.config import field_schema
from webapp.annotations.models import RunTag
from webapp.annotations.selectors import tags_by_run
from webapp.input_errors import InputError
from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.metrics.summaries import LEVELS
from webapp.projects.models import Project
from webapp.runs.models import Run, RunStatus
from webapp.runs.presenters import run_summary
from webapp.runs.selectors import project_runs
from webapp.whole_numbers import BIGINT_MAX, BIGINT_MIN

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
MAX_CONDITIONS = 10
MAX_COLUMNS = 12
MAX_VALUES = 20  # per list parameter (status, tag, preset)
AGGREGATES = ("last", "min", "max")
OPERATORS = {"=": "exact", "==": "exact", "!=": "exact", "<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
CONDITION = re.compile(r"\s*(?P<field>[^<>=!\s]+)\s*(?P<op>>=|<=|!=|==|=|>|<)\s*(?P<value>.*?)\s*")
# Printable, no spaces or quotes: what a trainer logs as a key (``val/loss``, ``eval/arc/acc,none``).
METRIC_KEY = re.compile(r"[A-Za-z0-9_./,@#%+\-\[\]()]{1,200}")

# The fixed columns and what each sorts by.
FIXED_SORTS: dict[str, Any] = {
    "name": F("name"),
    "status": F("status"),
    "preset": F("preset"),
    "step": F("step"),
    "last_loss": F("last_loss"),
    "duration": ExpressionWrapper(Coalesce(F("finished_at"), Now()) - F("started_at"), DurationField()),
    "created": F("created_at"),
}


NULLABLE_SORTS = {"last_loss", "duration"}


def _config_fields() -> dict[str, dict[str, Any]]:
    return {meta["path"]: meta for section in field_schema() for meta in section["fields"]}


CONFIG_FIELDS = _config_fields()
CONFIG_SECTIONS = {path.split(".")[0] for path in CONFIG_FIELDS}


@dataclass(frozen=True)
class Column:
    """A chosen column: a config field or a summary of a metric."""

    kind: Literal["config", "metric"]
    name: str  # "model.n_layers" or "val/loss"
    aggregate: str = ""  # metric columns: last, min or max

    @property
    def id(self) -> str:
        return f"{self.name}:{self.aggregate}" if self.kind == "metric" else self.name

    @property
    def label(self) -> str:
        return self.name if self.kind == "config" else f"{self.name} ({self.aggregate})"

    def expression(self) -> Any:
        if self.kind == "config":
            section, name = self.name.split(".")
            return KeyTransform(name, KeyTransform(section, "config"))
        if self.aggregate == "last":
            points = MetricPoint.objects.filter(run=OuterRef("pk"), key=self.name).order_by("-step")
            return Subquery(points.values("value")[:1], output_field=FloatField())
        top = MetricSummary.objects.filter(run=OuterRef("pk"), key=self.name, level=LEVELS - 1).order_by()
        agg = Min("min_value") if self.aggregate == "min" else Max("max_value")
        return Subquery(top.values("run").annotate(v=agg).values("v")[:1], output_field=FloatField())


@dataclass(frozen=True)
class Condition:
    column: Column
    op: str
    value: Any

    def text(self) -> str:
        value = json.dumps(self.value) if isinstance(self.value, bool) else self.value
        return f"{self.column.id if self.column.kind == 'metric' else self.column.name}{self.op}{value}"


@dataclass(frozen=True)
class RunsQuery:
    statuses: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    presets: tuple[str, ...] = ()
    text: str = ""
    archived: bool = False
    conditions: tuple[Condition, ...] = ()
    columns: tuple[Column, ...] = ()
    sort: str = "-created"
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    # Keyset: the previous page's last (sort value, id), where the sort allows it (see the module).
    after: tuple[Any, int] | None = None
    raw_where: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_default(self) -> bool:
        return not (
            self.statuses or self.tags or self.presets or self.text or self.conditions or self.archived
        )

    def params(self, **changes: Any) -> dict[str, Any]:
        """The query string's parameters for this query (with ``changes``), without the cursor."""
        q = replace(self, **changes)
        out: dict[str, Any] = {
            "status": ",".join(q.statuses),
            "tag": ",".join(q.tags),
            "preset": ",".join(q.presets),
            "q": q.text,
            "archived": "1" if q.archived else "",
            "where": [c.text() for c in q.conditions],
            "columns": ",".join(c.id for c in q.columns),
            "sort": "" if q.sort == "-created" else q.sort,
            "limit": "" if q.limit == DEFAULT_LIMIT else str(q.limit),
        }
        return {k: v for k, v in out.items() if v}

    def query_string(self, **changes: Any) -> str:
        return urlencode(self.params(**changes), doseq=True)

    def sort_link(self, column_id: str) -> str:
        """The query string that sorts by ``column_id``, descending if it is the ascending sort now."""
        target = f"-{column_id}" if self.sort == column_id else column_id
        return self.query_string(sort=target)


def parse_column(text: str, param: str) -> Column:
    """``model.n_layers`` (a config field) or ``val/loss[:last|:min|:max]`` (a metric)."""
    text = text.strip()
    if text in CONFIG_FIELDS:
        return Column("config", text)
    name, aggregate = text, "last"
    head, sep, tail = text.rpartition(":")
    if sep and tail in AGGREGATES:
        name, aggregate = head, tail
    section = name.split(".", 1)[0]
    if "/" not in name and section in CONFIG_SECTIONS:
        raise InputError({param: f"{text[:80]!r}: no such config field (e.g. model.n_layers)"})
    if not METRIC_KEY.fullmatch(name):
        raise InputError(
            {
                param: f"{text[:80]!r} is neither a config field (model.n_layers) nor a metric key (val/loss:min)"
            }
        )
    return Column("metric", name, aggregate)


def parse_condition(text: str) -> Condition:
    match = CONDITION.fullmatch(text)
    if not match:
        raise InputError(
            {"where": f"{text[:80]!r}: write FIELD OP VALUE, e.g. model.n_layers>=8 or val/loss<2.1"}
        )
    column = parse_column(match["field"], "where")
    op, raw = match["op"], match["value"]
    if raw == "":
        raise InputError({"where": f"{text[:80]!r}: a value is missing after {op!r}"})
    if column.kind == "metric":
        return Condition(column, op, _number(raw, text))
    meta = CONFIG_FIELDS[column.name]
    kind = meta["type"]
    if kind == "int":
        try:
            value: Any = int(raw) if raw.isascii() else None
        except ValueError:
            value = None
        if value is None or not BIGINT_MIN <= value <= BIGINT_MAX:
            raise InputError({"where": f"{text[:80]!r}: {column.name} is a whole number"})
    elif kind == "float":
        value = _number(raw, text)
    elif kind == "bool":
        if raw.lower() not in ("true", "false", "1", "0"):
            raise InputError({"where": f"{text[:80]!r}: {column.name} is true or false"})
        value = raw.lower() in ("true", "1")
    else:
        value = raw
    if (not isinstance(value, int | float) or isinstance(value, bool)) and op not in ("=", "==", "!="):
        raise InputError({"where": f"{text[:80]!r}: {column.name} can only be compared with = or !="})
    return Condition(column, op, value)


def _number(raw: str, text: str) -> float:
    try:
        value = float(raw) if raw.isascii() else math.nan
    except ValueError:
        raise InputError({"where": f"{text[:80]!r}: {raw[:40]!r} is not a number"}) from None
    if not math.isfinite(value):
        raise InputError({"where": f"{text[:80]!r}: the value must be a finite number"})
    return value


def _values(params: QueryDict, name: str) -> list[str]:
    out: list[str] = []
    for raw in params.getlist(name):
        out += [v.strip() for v in raw.split(",") if v.strip()]
    if len(out) > MAX_VALUES:
        raise InputError({name: f"at most {MAX_VALUES} values"})
    return list(dict.fromkeys(out))


def parse_runs_query(params: QueryDict) -> RunsQuery:
    """The query a runs list was asked for; an ``InputError`` names the parameter that is wrong."""
    statuses = _values(params, "status")
    bad = [s for s in statuses if s not in RunStatus.values]
    if bad:
        raise InputError({"status": f"{bad[0][:40]!r} is not a status; one of {', '.join(RunStatus.values)}"})
    tags = [t.lower() for t in _values(params, "tag")]
    presets = _values(params, "preset")
    if any(len(v) > 200 for v in tags + presets):
        raise InputError({"tag" if any(len(t) > 200 for t in tags) else "preset": "too long"})
    text = params.get("q", "").strip()[:200]
    # Repeated, or several in one box separated by ";" (the page's filter form has one box).
    where = [w for raw in params.getlist("where") for w in raw.split(";") if w.strip()]
    if len(where) > MAX_CONDITIONS:
        raise InputError({"where": f"at most {MAX_CONDITIONS} conditions"})
    conditions = tuple(parse_condition(w) for w in where)
    column_texts = _values(params, "columns")
    if len(column_texts) > MAX_COLUMNS:
        raise InputError({"columns": f"at most {MAX_COLUMNS} columns"})
    columns = tuple(dict.fromkeys(parse_column(c, "columns") for c in column_texts))
    sort = params.get("sort", "").strip() or "-created"
    key = sort.removeprefix("-")
    if key not in FIXED_SORTS:
        sort = ("-" if sort.startswith("-") else "") + parse_column(key, "sort").id
    return RunsQuery(
        statuses=tuple(statuses),
        tags=tuple(tags),
        presets=tuple(presets),
        text=text,
        archived=params.get("archived", "") in ("1", "true", "yes"),
        conditions=conditions,
        columns=columns,
        sort=sort,
        limit=_limit(params.get("limit", "")),
        offset=decode_cursor(params.get("cursor", "")),
        after=decode_keyset(params.get("cursor", ""), sort),
        raw_where=tuple(where),
    )


def _limit(raw: str) -> int:
    if not raw:
        return DEFAULT_LIMIT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise InputError({"limit": f"a whole number from 1 to {MAX_LIMIT}"})
    return int(raw)


# Sorts cut by keyset, and the stored field each compares (metric columns: their annotation).
KEYSET_FIELDS = {
    "name": "name",
    "status": "status",
    "preset": "preset",
    "step": "step",
    "last_loss": "last_loss",
    "created": "created_at",
}
BAD_CURSOR = "not a cursor this list gave out; drop it to start again"


def keyset_field(sort: str) -> str | None:
    """The field a page of ``sort`` is cut on by keyset; None where the offset stays (see the module)."""
    key = sort.removeprefix("-")
    if key in KEYSET_FIELDS:
        return KEYSET_FIELDS[key]
    if key in FIXED_SORTS:
        return None
    column = parse_column(key, "sort")
    return _alias(column) if column.kind == "metric" else None


def encode_cursor(offset: int, *, sort: str = "", after: tuple[Any, int] | None = None) -> str:
    """A page's cursor: its position, and with ``after`` the last row's (sort value, id) under ``sort``."""
    data: dict[str, Any] = {"o": offset}
    if after is not None:
        value, run_id = after
        if isinstance(value, dt.datetime):
            value = value.isoformat()
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # never stored as such (NaN/inf are NULL); sorts as a run without a value
        data |= {"s": sort, "k": [value, run_id]}
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _cursor_data(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    except (ValueError, TypeError, binascii.Error):
        raise InputError({"cursor": BAD_CURSOR}) from None
    if not isinstance(data, dict):
        raise InputError({"cursor": BAD_CURSOR})
    return data


def decode_cursor(raw: str) -> int:
    """The position a cursor stands for. Cursors are opaque to clients: pass back what came."""
    if not raw:
        return 0
    offset = _cursor_data(raw).get("o")
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset <= 10**9:
        raise InputError({"cursor": BAD_CURSOR})
    return offset


def decode_keyset(raw: str, sort: str) -> tuple[Any, int] | None:
    """The (sort value, id) a cursor continues after; None for an offset cursor (or none).

    Every part is checked as hostile: the value must have the sort's type, or the cursor is a
    400 naming ``cursor`` (one made for another sort, too).
    """
    if not raw:
        return None
    data = _cursor_data(raw)
    if "k" not in data:
        return None
    field = keyset_field(sort)
    pair = data["k"]
    if data.get("s") != sort or field is None or not isinstance(pair, list) or len(pair) != 2:
        raise InputError({"cursor": "made for another sort; drop it to start again"})
    value, run_id = pair
    if not isinstance(run_id, int) or isinstance(run_id, bool) or not 0 < run_id <= BIGINT_MAX:
        raise InputError({"cursor": BAD_CURSOR})
    return _keyset_value(field, value), run_id


def _keyset_value(field: str, value: Any) -> Any:
    if field in ("name", "status", "preset"):
        ok = isinstance(value, str) and len(value) <= 500 and "\x00" not in value
    elif field == "step":
        ok = isinstance(value, int) and not isinstance(value, bool) and BIGINT_MIN <= value <= BIGINT_MAX
    elif field == "created_at":
        try:
            value = dt.datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            value = None
        ok = value is not None and value.tzinfo is not None
    else:  # last_loss and metric columns: a finite number, or None (runs without a value)
        ok = value is None or (
            isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
        )
        value = float(value) if ok and value is not None else value
    if not ok:
        raise InputError({"cursor": BAD_CURSOR})
    return value


def _after(field: str, descending: bool, after: tuple[Any, int], nullable: bool) -> Q:
    """Rows after (value, id) in the order ``filtered_runs`` sorts them (nulls last either way)."""
    value, run_id = after
    beyond = "lt" if descending else "gt"
    if value is None:  # already among the runs without a value: only ids are left to order them
        return Q(**{f"{field}__isnull": True, f"pk__{beyond}": run_id})
    q = Q(**{f"{field}__{beyond}": value}) | Q(**{field: value, f"pk__{beyond}": run_id})
    return q | Q(**{f"{field}__isnull": True}) if nullable else q


def _lookup(condition: Condition) -> Q:
    lookup = OPERATORS[condition.op]
    if condition.column.kind == "config":
        section, name = condition.column.name.split(".")
        q = Q(**{f"config__{section}__{name}__{lookup}": condition.value})
    else:
        q = Q(**{f"{_alias(condition.column)}__{lookup}": condition.value})
    return ~q if condition.op == "!=" else q


def _alias(column: Column) -> str:
    # Made only of [a-z0-9_] whatever the key holds, so it is a safe identifier.
    return f"col_{column.kind}_{hashlib.sha1(column.id.encode()).hexdigest()[:16]}"


def selected_runs(
    user: AbstractBaseUser | AnonymousUser, project: Project, query: RunsQuery
) -> QuerySet[Run]:
    """The project's runs that ``user`` sees and the query selects, unsorted (what a count needs)."""
    qs = project_runs(user, project, include_archived=query.archived).order_by()
    if query.statuses:
        qs = qs.filter(status__in=query.statuses)
    if query.presets:
        qs = qs.filter(preset__in=query.presets)
    if query.tags:
        qs = qs.filter(pk__in=_tagged(query.tags))
    for word in query.text.split()[:10]:  # every word, in the name, preset or status
        qs = qs.filter(Q(name__icontains=word) | Q(preset__icontains=word) | Q(status__icontains=word))
    metrics = {c.column for c in query.conditions if c.column.kind == "metric"}
    qs = qs.annotate(**{_alias(c): c.expression() for c in metrics})
    for condition in query.conditions:
        qs = qs.filter(_lookup(condition))
    return qs


def filtered_runs(
    user: AbstractBaseUser | AnonymousUser, project: Project, query: RunsQuery
) -> QuerySet[Run]:
    """``selected_runs`` in the query's order, not yet cut to a page."""
    qs = selected_runs(user, project, query)
    sort_key = query.sort.removeprefix("-")
    descending = query.sort.startswith("-")
    if sort_key in FIXED_SORTS:
        order = FIXED_SORTS[sort_key]
        # Columns that are never empty sort as their index does (``-created`` reads the project's index).
        nullable = sort_key in NULLABLE_SORTS
    else:
        column = parse_column(sort_key, "sort")
        qs = qs.annotate(**{_alias(column): column.expression()})
        order, nullable = F(_alias(column)), True
    if nullable:
        ordered = order.desc(nulls_last=True) if descending else order.asc(nulls_last=True)
    else:
        ordered = order.desc() if descending else order.asc()
    field = keyset_field(query.sort)
    if query.after is not None and field is not None:
        qs = qs.filter(_after(field, descending, query.after, nullable))
    return qs.order_by(ordered, "-id" if descending else "id")


def _tagged(tags: tuple[str, ...]) -> QuerySet:
    return RunTag.objects.filter(name__in=tags).values("run_id")


def column_values(run: Run, columns: tuple[Column, ...]) -> dict[str, Any]:
    """The chosen columns' values of one run of ``filtered_runs`` (None where it has none)."""
    out: dict[str, Any] = {}
    for column in columns:
        value = getattr(run, _alias(column), None)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[column.id] = value
    return out


@dataclass(frozen=True)
class RunsPage:
    runs: list[dict[str, Any]]  # run_summary(run) with its "tags" and chosen "columns"
    total: int  # runs the query selects, over all pages
    next_cursor: str | None
    query: RunsQuery

    @property
    def columns(self) -> list[dict[str, str]]:
        return [{"id": c.id, "label": c.label, "kind": c.kind} for c in self.query.columns]

    @property
    def headers(self) -> list[dict[str, Any]]:
        """The table's columns after the tick box, in order: id, label, number or not, sort link."""
        fixed = [("name", "Run", False), ("status", "Status", False), ("tags", "Tags", False)]
        fixed += [("step", "Step", True), ("last_loss", "Last loss", True)]
        chosen = [(c.id, c.label, True) for c in self.query.columns]
        out = []
        for column_id, label, numeric in [
            *fixed,
            *chosen,
            ("duration", "Duration", True),
            ("created", "Created", False),
        ]:
            sorted_as = (
                "asc"
                if self.query.sort == column_id
                else "desc"
                if self.query.sort == f"-{column_id}"
                else ""
            )
            link = None if column_id == "tags" else self.query.sort_link(column_id)
            out.append({"id": column_id, "label": label, "num": numeric, "link": link, "sorted": sorted_as})
        return out

    @property
    def first(self) -> int:
        return self.query.offset + 1 if self.runs else 0

    @property
    def last(self) -> int:
        return self.query.offset + len(self.runs)

    @property
    def next_query(self) -> str | None:
        if self.next_cursor is None:
            return None
        return "&".join(filter(None, [self.query.query_string(), f"cursor={self.next_cursor}"]))


def runs_page(user: AbstractBaseUser | AnonymousUser, project: Project, query: RunsQuery) -> RunsPage:
    """One page of the runs table (or of the API's list) for ``query``.

    The page's ids are read first, sorting narrow rows (a run's row carries its whole config,
    ~2 kB: sorting 5,000 of those took 30 ms); then only those runs are read whole, with
    their chosen columns computed for them alone.
    """
    field = keyset_field(query.sort)
    ordered = filtered_runs(user, project, query)
    # A keyset cursor's filter already starts the page; an offset counts rows off.
    start = 0 if query.after is not None and field is not None else query.offset
    keyed = list(ordered.values_list("pk", field or "pk")[start : start + query.limit])
    ids = [pk for pk, _ in keyed]
    # A short page needs no count: it is the last one.
    short = len(ids) < query.limit and (ids or query.offset == 0)
    total = query.offset + len(ids) if short else selected_runs(user, project, query).count()
    rows_qs = Run.objects.filter(pk__in=ids).select_related("project", "project__team")
    rows_qs = rows_qs.annotate(**{_alias(c): c.expression() for c in query.columns})
    found = {r.pk: r for r in rows_qs}
    page = [found[i] for i in ids if i in found]
    tags = tags_by_run(ids)
    rows = []
    for r in page:
        values = column_values(r, query.columns)
        cells = [_cell(v) for v in values.values()]
        rows.append({**run_summary(r), "tags": tags.get(r.id, []), "columns": values, "cells": cells})
    end = query.offset + len(ids)
    if end >= total:
        return RunsPage(rows, total, None, query)
    if field is None:
        return RunsPage(rows, total, encode_cursor(end), query)
    last_value, last_id = keyed[-1][1], keyed[-1][0]
    return RunsPage(rows, total, encode_cursor(end, sort=query.sort, after=(last_value, last_id)), query)


def _cell(value: Any) -> str:
    """A chosen column's value as the table shows it."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def column_choices(project: Project, recent: int = 200) -> list[str]:
    """What the page suggests for columns and conditions: every config field, then the metric
    keys the project's ``recent`` newest runs logged (a suggestion list, not a limit)."""
    newest = Run.objects.filter(project=project).order_by("-created_at", "-id").values("pk")[:recent]
    keys = MetricKey.objects.filter(run__in=newest).values_list("key", flat=True).distinct().order_by("key")
    return [*CONFIG_FIELDS, *(k for k in keys[:500] if METRIC_KEY.fullmatch(k))]
