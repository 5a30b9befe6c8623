"""MLflow's ``search_runs`` language: the filter and ``order_by`` a client sends, parsed and applied.

The grammar is MLflow's (its "Search Runs" docs): clauses joined by ``AND`` (no ``OR``), each
``<identifier> <comparator> <value>``. An identifier is ``<entity>.<name>`` with entity
``metrics``, ``params``, ``tags`` or ``attributes`` (and MLflow's other spellings: ``metric``,
``param``, ``parameter(s)``, ``tag``, ``attribute``, ``attr``, ``run``), or a bare attribute
name; a name with special characters is quoted with backticks or double quotes
(``metrics.`train/loss```). What each entity compares, as MLflow does:

- metrics (the value at the highest step): ``= != < <= > >=`` against a number;
- params and tags: ``= != LIKE ILIKE`` against a quoted string, ``IS NULL`` / ``IS NOT NULL``;
- string attributes ``run_id``, ``run_name``, ``status``, ``user_id``, ``artifact_uri``:
  ``= != LIKE ILIKE`` and ``IN`` / ``NOT IN`` a list of quoted strings;
- time attributes ``start_time``, ``end_time`` (``created`` is ``start_time``): milliseconds
  since 1970, compared as metrics are.

A run without the metric, param, tag or end time a clause names does not match it (``!=``
included), as in MLflow's stores. ``order_by`` items are ``<identifier> [ASC|DESC]`` over the
same identifiers; runs missing the value (or whose metric is NaN) come last either way, and
ties keep MLflow's natural order, newest start first. The text is read by a small
recursive-descent reader; anything outside the grammar is an ``INVALID_PARAMETER_VALUE``
naming the place and what was expected, never a guess and never a 500.

``experiments/search`` reads the same grammar with experiments' vocabulary (``EXPERIMENTS``):
``tags.`` and the attributes ``name`` (``= != LIKE ILIKE``), ``creation_time`` and
``last_update_time`` (milliseconds, as numbers).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from webapp.mlflow_api.protocol import MlflowError

MAX_FILTER_LENGTH = 2000
MAX_ORDER_BY = 10
MAX_IN_VALUES = 1000

METRIC, PARAM, TAG, ATTRIBUTE = "metric", "param", "tag", "attribute"
ENTITIES = {
    "metric": METRIC,
    "metrics": METRIC,
    "param": PARAM,
    "params": PARAM,
    "parameter": PARAM,
    "parameters": PARAM,
    "tag": TAG,
    "tags": TAG,
    "attribute": ATTRIBUTE,
    "attributes": ATTRIBUTE,
    "attr": ATTRIBUTE,
    "run": ATTRIBUTE,
}
STRING_ATTRIBUTES = ("run_id", "run_name", "status", "user_id", "artifact_uri")
TIME_ATTRIBUTES = ("start_time", "end_time")
ATTRIBUTE_ALIASES = {"created": "start_time", "Created": "start_time", "run name": "run_name"}
ATTRIBUTE_ALIASES.update({"Run name": "run_name", "Run Name": "run_name"})
NUMBER_COMPARATORS = ("=", "!=", "<", "<=", ">", ">=")
TEXT_COMPARATORS = ("=", "!=", "LIKE", "ILIKE")
NULL_COMPARATORS = ("IS NULL", "IS NOT NULL")
LIST_COMPARATORS = ("IN", "NOT IN")

_SPACE = re.compile(r"\s*")
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# A bare entity name after the dot: up to white space, a comparator, a quote or a bracket.
_BARE_NAME = re.compile(r"[^\s=!<>()'\"`,]+")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_SYMBOL_COMPARATOR = re.compile(r"!=|<>|==|>=|<=|=|<|>")


@dataclass(frozen=True)
class Vocabulary:
    """What a filter or order_by may name: the entities and attributes of runs or of experiments."""

    noun: str  # "runs", "experiments": said in refusals
    entities: tuple[str, ...]
    strings: tuple[str, ...]  # string attributes
    times: tuple[str, ...]  # attributes in milliseconds since 1970
    lists: bool  # whether string attributes take IN / NOT IN
    aliases: dict[str, str] = field(default_factory=dict)


RUNS = Vocabulary(
    "runs", (METRIC, PARAM, TAG, ATTRIBUTE), STRING_ATTRIBUTES, TIME_ATTRIBUTES, True, ATTRIBUTE_ALIASES
)
EXPERIMENTS = Vocabulary(
    "experiments", (TAG, ATTRIBUTE), ("name",), ("creation_time", "last_update_time"), False
)


@dataclass(frozen=True)
class Clause:
    entity: str  # metric, param, tag, attribute
    name: str  # an attribute's canonical name (start_time for "created")
    op: str  # =, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL
    value: Any = None  # float, str, tuple of str, or None for IS [NOT] NULL


@dataclass(frozen=True)
class OrderKey:
    entity: str
    name: str
    ascending: bool = True


@dataclass
class RunRow:
    """What a filter or an order can read of one run; ``metrics`` holds None for a NaN value."""

    id: int
    run_name: str
    status: str
    user_id: str
    start_time: int
    end_time: int | None
    params: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float | None] = field(default_factory=dict)

    def value(self, entity: str, name: str) -> tuple[bool, Any]:
        """(present, value): a metric present with NaN is (True, None); absent is (False, None)."""
        if entity == METRIC:
            return name in self.metrics, self.metrics.get(name)
        if entity == PARAM:
            return name in self.params, self.params.get(name)
        if entity == TAG:
            return name in self.tags, self.tags.get(name)
        if name == "run_id":
            return True, str(self.id)
        if name == "artifact_uri":
            return True, ""
        found = getattr(self, name)
        return found is not None, found


def bad(message: str) -> MlflowError:
    return MlflowError("INVALID_PARAMETER_VALUE", message)


class _Reader:
    """One pass over a filter or an order_by item; ``fail`` says where and what was expected."""

    def __init__(self, text: str, what: str, vocabulary: Vocabulary = RUNS) -> None:
        self.text, self.pos, self.what, self.vocabulary = text, 0, what, vocabulary

    def fail(self, expected: str) -> MlflowError:
        rest = self.text[self.pos : self.pos + 30]
        found = f"found {rest!r}" if rest else "found the end"
        return bad(
            f"{self.what}: at character {self.pos + 1}, expected {expected}; {found} (in {self.text[:200]!r})"
        )

    def space(self) -> None:
        self.pos = _SPACE.match(self.text, self.pos).end()

    def at_end(self) -> bool:
        self.space()
        return self.pos >= len(self.text)

    def keyword(self, *words: str) -> bool:
        """Consume the keywords (case-insensitive, each a whole word) if they come next."""
        start = self.pos
        for word in words:
            self.space()
            match = _WORD.match(self.text, self.pos)
            if match is None or match.group().upper() != word:
                self.pos = start
                return False
            self.pos = match.end()
        return True

    def quoted(self, quotes: str) -> str | None:
        self.space()
        if self.pos >= len(self.text) or self.text[self.pos] not in quotes:
            return None
        quote = self.text[self.pos]
        end = self.text.find(quote, self.pos + 1)
        if end < 0:
            raise self.fail(f"a closing {quote}")
        value = self.text[self.pos + 1 : end]
        self.pos = end + 1
        return value

    def identifier(self) -> tuple[str, str]:
        """``entity.name`` or a bare attribute; returns (entity, name) with the attribute resolved."""
        self.space()
        quoted = self.quoted('`"')
        if quoted is not None:  # `run name` alone: an attribute
            return ATTRIBUTE, _attribute(quoted, self.what, self.vocabulary)
        word = _WORD.match(self.text, self.pos)
        if word is None:
            raise self.fail("an identifier such as metrics.loss, params.lr, tags.team or attributes.status")
        self.pos = word.end()
        if self.pos < len(self.text) and self.text[self.pos] == ".":
            entity = ENTITIES.get(word.group().lower())
            if entity is None:
                if word.group().lower() in ("dataset", "datasets"):
                    raise bad(
                        f"{self.what}: datasets are not recorded by Runwright; filter on metrics, params, tags or attributes"
                    )
                raise bad(
                    f"{self.what}: unknown entity {word.group()!r}; use metrics., params., tags. or attributes."
                )
            if entity not in self.vocabulary.entities:
                others = " or ".join(f"{e}s." for e in self.vocabulary.entities if e != ATTRIBUTE)
                raise bad(
                    f"{self.what}: {self.vocabulary.noun} have no {entity}s; use {others} or attributes."
                )
            self.pos += 1
            name = self.quoted('`"')
            if name is None:
                bare = _BARE_NAME.match(self.text, self.pos)
                if bare is None:
                    raise self.fail(f"a name after {word.group()}.")
                name = bare.group()
                self.pos = bare.end()
            if not name:
                raise self.fail(f"a name after {word.group()}.")
            return entity, (_attribute(name, self.what, self.vocabulary) if entity == ATTRIBUTE else name)
        return ATTRIBUTE, _attribute(word.group(), self.what, self.vocabulary)

    def comparator(self) -> str:
        self.space()
        symbol = _SYMBOL_COMPARATOR.match(self.text, self.pos)
        if symbol is not None:
            if symbol.group() in ("<>", "=="):
                raise self.fail("a comparator (=, !=, <, <=, >, >=); '<>' and '==' are not MLflow's")
            self.pos = symbol.end()
            return symbol.group()
        for words in (("LIKE",), ("ILIKE",), ("IN",), ("NOT", "IN"), ("IS", "NOT", "NULL"), ("IS", "NULL")):
            if self.keyword(*words):
                return " ".join(words)
        if self.keyword("NOT"):
            raise self.fail("IN after NOT (NOT LIKE is not part of MLflow's filter)")
        raise self.fail("a comparator: =, !=, <, <=, >, >=, LIKE, ILIKE, IN, NOT IN, IS NULL, IS NOT NULL")

    def value(self) -> Any:
        """A quoted string (str), a number (float) or a parenthesised list of strings (tuple)."""
        text = self.quoted("'\"")
        if text is not None:
            return text
        self.space()
        if self.text.startswith("(", self.pos):
            self.pos += 1
            items: list[str] = []
            while True:
                item = self.quoted("'\"")
                if item is None:
                    raise self.fail("a quoted string in the list, e.g. ('a', 'b')")
                items.append(item)
                if len(items) > MAX_IN_VALUES:
                    raise bad(f"{self.what}: a list holds at most {MAX_IN_VALUES} values")
                self.space()
                if self.text.startswith(",", self.pos):
                    self.pos += 1
                    continue
                if self.text.startswith(")", self.pos):
                    self.pos += 1
                    return tuple(items)
                raise self.fail("',' or ')'")
        number = _NUMBER.match(self.text, self.pos)
        if number is not None:
            self.pos = number.end()
            return float(number.group())
        raise self.fail("a value: a number, a 'quoted string' or a list ('a', 'b')")


def _attribute(name: str, what: str, vocabulary: Vocabulary = RUNS) -> str:
    name = vocabulary.aliases.get(name, name)
    if name not in vocabulary.strings + vocabulary.times:
        known = ", ".join(vocabulary.strings + vocabulary.times)
        others = ", ".join(f"{e}s." for e in vocabulary.entities if e != ATTRIBUTE)
        raise bad(
            f"{what}: unknown attribute {name!r}; {vocabulary.noun} have {known} (prefix {others} for the others)"
        )
    return name


def _checked(entity: str, name: str, op: str, value: Any, vocabulary: Vocabulary = RUNS) -> Clause:
    """A clause whose comparator and value fit its entity, or MLflow's kind of refusal."""
    shown = f"{'attributes' if entity == ATTRIBUTE else entity + 's'}.{name}"
    numeric = entity == METRIC or (entity == ATTRIBUTE and name in vocabulary.times)
    if numeric:
        allowed = NUMBER_COMPARATORS
    elif entity == ATTRIBUTE:
        allowed = TEXT_COMPARATORS + (LIST_COMPARATORS if vocabulary.lists else ())
    else:
        allowed = TEXT_COMPARATORS + NULL_COMPARATORS
    if op not in allowed:
        raise bad(f"filter: {shown} cannot be compared with {op}; it takes {', '.join(allowed)}")
    if op in NULL_COMPARATORS:
        return Clause(entity, name, op)
    if op in LIST_COMPARATORS:
        if not isinstance(value, tuple):
            raise bad(f"filter: {shown} {op} takes a list of quoted strings, e.g. ('a', 'b')")
        return Clause(entity, name, op, value)
    if isinstance(value, tuple):
        raise bad(f"filter: only IN and NOT IN take a list; {shown} {op} takes one value")
    if numeric and not isinstance(value, float):
        unit = " (milliseconds since 1970)" if entity == ATTRIBUTE else ""
        raise bad(f"filter: {shown} is a number{unit}; compare it with a number, not {value!r}")
    if not numeric and not isinstance(value, str):
        raise bad(
            f"filter: {shown} is a string; quote the value with single or double quotes, e.g. {shown} = '{_shown(value)}'"
        )
    return Clause(entity, name, op, value)


def _shown(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


def parse_filter(text: str, vocabulary: Vocabulary = RUNS) -> list[Clause]:
    """The clauses of a filter string (empty: every run, or every experiment)."""
    if len(text) > MAX_FILTER_LENGTH:
        raise bad(f"filter: longer than {MAX_FILTER_LENGTH} characters")
    reader = _Reader(text, "filter", vocabulary)
    clauses: list[Clause] = []
    if reader.at_end():
        return clauses
    while True:
        entity, name = reader.identifier()
        op = reader.comparator()
        value = None if op in NULL_COMPARATORS else reader.value()
        clauses.append(_checked(entity, name, op, value, vocabulary))
        if reader.at_end():
            return clauses
        if reader.keyword("OR"):
            raise bad("filter: OR is not supported (MLflow's filter joins clauses with AND only)")
        if not reader.keyword("AND"):
            raise reader.fail("AND or the end of the filter")


def parse_order_by(items: Any, vocabulary: Vocabulary = RUNS) -> list[OrderKey]:
    """``["metrics.loss", "params.lr DESC", "attributes.start_time ASC"]`` as order keys."""
    if items is None or items == "":
        return []
    if isinstance(items, str):
        items = [items]
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise bad('order_by: a list of strings such as "metrics.loss ASC"')
    if len(items) > MAX_ORDER_BY:
        raise bad(f"order_by: at most {MAX_ORDER_BY} keys")
    keys = []
    for item in items:
        if len(item) > 500:
            raise bad("order_by: an item is longer than 500 characters")
        reader = _Reader(item, "order_by", vocabulary)
        entity, name = reader.identifier()
        ascending = True
        if reader.keyword("DESC"):
            ascending = False
        else:
            reader.keyword("ASC")
        if not reader.at_end():
            raise reader.fail("ASC, DESC or the end of the item")
        if entity == ATTRIBUTE and name == "artifact_uri":
            raise bad("order_by: attributes.artifact_uri is not orderable")
        keys.append(OrderKey(entity, name, ascending))
    return keys


def metric_keys(clauses: Sequence[Clause], order: Sequence[OrderKey]) -> set[str]:
    """The metric names a search must read each run's latest value of."""
    return {c.name for c in clauses if c.entity == METRIC} | {o.name for o in order if o.entity == METRIC}


def matches(row: RunRow, clauses: Sequence[Clause]) -> bool:
    return all(_holds(row, clause) for clause in clauses)


def _holds(row: RunRow, clause: Clause) -> bool:
    present, actual = row.value(clause.entity, clause.name)
    if clause.op == "IS NULL":
        return not present
    if clause.op == "IS NOT NULL":
        return present
    if actual is None:  # missing, a NaN metric or an unfinished run's end_time
        return False
    return compare(actual, clause.op, clause.value)


def compare(actual: Any, op: str, expected: Any) -> bool:
    if op in ("LIKE", "ILIKE"):
        return like(actual, expected, insensitive=op == "ILIKE")
    if op == "IN":
        return actual in expected
    if op == "NOT IN":
        return actual not in expected
    return {
        "=": actual == expected,
        "!=": actual != expected,
        ">": actual > expected,
        ">=": actual >= expected,
        "<": actual < expected,
        "<=": actual <= expected,
    }[op]


def like(actual: str, pattern: str, *, insensitive: bool = False) -> bool:
    """SQL's LIKE: ``%`` any run of characters, ``_`` one character, the rest literal."""
    regex = "".join(".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern)
    return re.fullmatch(regex, actual, (re.IGNORECASE if insensitive else 0) | re.DOTALL) is not None


def ordered(rows: list[RunRow], order: Sequence[OrderKey]) -> list[RunRow]:
    """MLflow's order: newest start first (then the newest id), re-sorted stably by each key from
    the last to the first; per key, the values in order, then NaN metrics, then runs without it."""
    return sorted_by(sorted(rows, key=lambda r: (-r.start_time, -r.id)), order)


def sorted_by(rows: list[Any], order: Sequence[OrderKey]) -> list[Any]:
    """``rows`` (anything with ``value(entity, name)``) re-sorted stably by each key, last first."""
    for key in reversed(order):
        valued, nan, missing = [], [], []
        for row in rows:
            present, value = row.value(key.entity, key.name)
            if value is not None:
                valued.append(row)
            elif present and key.entity == METRIC:
                nan.append(row)  # logged, but NaN
            else:
                missing.append(row)
        valued.sort(key=lambda row, key=key: row.value(key.entity, key.name)[1], reverse=not key.ascending)
        rows = valued + nan + missing
    return rows
