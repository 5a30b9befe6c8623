"""The JSON body of an API request, checked whole before a view reads one field of it.

What a view then sees is data every layer below accepts: one object, at most
``MAX_DEPTH`` levels deep, only the endpoint's fields, finite numbers within BIGINT, and
strings without NUL or lone surrogates (PostgreSQL refuses both in text and jsonb;
neither can be encoded as UTF-8 for SQLite). Each problem is a 400 keyed by the field's
path in the body, e.g. ``{"errors": {"config.data.corpus": "must not contain NUL characters"}}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection
from typing import Any

from django.http import HttpRequest
from ninja.parser import Parser

from webapp.input_errors import InputError
from webapp.whole_numbers import BIGINT_MAX, BIGINT_MIN

# A run config is two levels deep and an eval request one; anything near Python's
# recursion limit (where json.loads itself fails) is an attack, not a request.
MAX_DEPTH = 32
# One message per field is useful; a million of them for a million bad list items is not.
MAX_ERRORS = 20


def body_error(message: str) -> InputError:
    """A 400 about the body as a whole."""
    return InputError({"body": message}, message=message)


def json_list(
    request: HttpRequest, field: str, fields: Collection[str] = ()
) -> tuple[list[Any], dict[str, Any]]:
    """A batch: the body's JSON array, or the array under ``field`` of a JSON object with ``fields``.

    Returns the array and the object (empty for a bare array); every value is checked as
    ``StrictJsonParser`` checks a body, its problems keyed ``field[i].name``.
    """
    data = _parse(request) if request.body else None
    if isinstance(data, list):
        data = {field: data}
    if not isinstance(data, dict) or not isinstance(data.get(field), list):
        raise InputError({field: f'the body must be a JSON array, or an object with "{field}": [...]'})
    errors = _unknown_fields(data, (field, *fields))
    errors.update(_value_problems(data))
    if errors:
        raise InputError(dict(list(errors.items())[:MAX_ERRORS]))
    return data[field], data


class StrictJsonParser(Parser):
    """ninja's body parser: one JSON object, checked whole before the typed model reads it.

    The model then names unknown fields and wrong types; what it cannot see (NaN, NUL,
    lone surrogates, BIGINT overflow, absurd depth) is refused here. An empty body never
    reaches a parser: the views take it as an empty object (``POST .../cancel``).
    """

    def parse_body(self, request: HttpRequest) -> dict[str, Any]:
        data = _parse(request)
        if not isinstance(data, dict):
            raise body_error('the body must be a JSON object, e.g. {"name": "..."}')
        errors = _value_problems(data)
        if errors:
            raise InputError(errors)
        return data


def _parse(request: HttpRequest) -> Any:
    try:
        return json.loads(request.body, parse_constant=_reject_constant)
    except RecursionError:
        raise body_error(f"malformed JSON: nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise body_error(f"malformed JSON: {exc}") from None


def _unknown_fields(data: dict[str, Any], fields: Collection[str]) -> dict[str, str]:
    unknown = sorted(set(data) - set(fields))
    if not unknown:
        return {}
    expected = f"expected {', '.join(fields)}" if fields else "this endpoint takes no fields"
    return {key: f"unknown field; {expected}" for key in unknown[:MAX_ERRORS]}


def value_problems(data: dict[str, Any]) -> dict[str, str]:
    """What ``json_object`` checks in every value, for a body read another way (MLflow's)."""
    return dict(list(_value_problems(data).items())[:MAX_ERRORS])


def _value_problems(data: dict[str, Any]) -> dict[str, str]:
    """Field path -> what is wrong there, walking the body without recursion."""
    errors: dict[str, str] = {}
    stack: list[tuple[Any, str, int]] = [(data, "", 0)]
    while stack and len(errors) < MAX_ERRORS:
        value, path, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth >= MAX_DEPTH:
                errors[path or "body"] = f"nested deeper than {MAX_DEPTH} levels"
                continue
            if isinstance(value, dict):
                for key, item in value.items():
                    child = f"{path}.{key}" if path else key
                    problem = _string_problem(key)
                    if problem:
                        errors[child] = f"field name {problem}"
                    else:
                        stack.append((item, child, depth + 1))
            else:
                stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))
        elif isinstance(value, str):
            problem = _string_problem(value)
            if problem:
                errors[path] = problem
        elif isinstance(value, float) and not math.isfinite(value):
            errors[path] = "must be a finite number (1e999 overflows to infinity)"
        elif isinstance(value, int) and not isinstance(value, bool) and not BIGINT_MIN <= value <= BIGINT_MAX:
            errors[path] = f"must be between {BIGINT_MIN} and {BIGINT_MAX}"
    return errors


def _string_problem(text: str) -> str | None:
    if "\x00" in text:
        return "must not contain NUL characters"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate, e.g. \\ud800)"
    return None


def _reject_constant(name: str) -> float:
    # Python's json accepts NaN and Infinity, which are not JSON and slip past range checks.
    raise ValueError(f"{name} is not valid JSON")
