"""Typed reads of JSON body fields and query parameters: the wrong type is a 400 that names the field."""

from __future__ import annotations

from webapp.input_errors import InputError
from webapp.whole_numbers import parse_whole_number


def string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise InputError({field: "must be a string"})
    return value


def whole_number(value: object, field: str) -> int:
    """A JSON integer (or 3.0), or ASCII decimal text as a query string carries it."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = parse_whole_number(str(value))
    elif isinstance(value, float) and value.is_integer():
        number = parse_whole_number(str(int(value)))
    else:
        number = parse_whole_number(value.strip() if isinstance(value, str) else None)
    if number is None:
        raise InputError({field: "must be a whole number written with digits 0-9, e.g. 12"})
    return number


def optional_whole_number(value: object, field: str) -> int | None:
    return None if value is None or value == "" else whole_number(value, field)


def string_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError({field: "must be a list of strings"})
    return value
