"""Typed request fields: what a body or query field must be, and the message when it is not.

Each is a plain JSON Schema type in the OpenAPI schema (``string``, ``integer``, ...) with a
check in front that refuses what pydantic's lax mode would coerce (a number for a string,
``"yes"`` for a boolean, Arabic-Indic digits or 1e30 for a whole number), with the same
message the services use, keyed by the field's path (``webapp.api.errors``).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, Field

from webapp.input_errors import InputError
from webapp.whole_numbers import BIGINT_MAX, BIGINT_MIN, parse_whole_number

WHOLE_NUMBER = "must be a whole number written with digits 0-9, e.g. 12"


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _whole_number(value: Any) -> int:
    """A JSON integer (or 3.0), or ASCII decimal text as a query string carries it."""
    if isinstance(value, int) and not isinstance(value, bool):
        number = parse_whole_number(str(value))
    elif isinstance(value, float) and value.is_integer():
        number = parse_whole_number(str(int(value)))
    else:
        number = parse_whole_number(value.strip() if isinstance(value, str) else None)
    if number is None:
        raise ValueError(WHOLE_NUMBER)
    return number


def query_whole_number(raw: str, field: str) -> int:
    """A whole number from the query string; a 400 naming ``field`` otherwise."""
    try:
        return _whole_number(raw)
    except ValueError:
        raise InputError({field: WHOLE_NUMBER}) from None


def _optional_whole_number(value: Any) -> int | None:
    return None if value is None or value == "" else _whole_number(value)


def _string_list(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError("must be a list of strings")
    return value


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError("must be true or false")
    return value


Text = Annotated[str, BeforeValidator(_string)]
WholeNumber = Annotated[int, BeforeValidator(_whole_number), Field(ge=BIGINT_MIN, le=BIGINT_MAX)]
# The bounds go on the int alone: on ``int | None`` pydantic applies them to None too (a 500).
OptionalWholeNumber = Annotated[
    Annotated[int, Field(ge=BIGINT_MIN, le=BIGINT_MAX)] | None, BeforeValidator(_optional_whole_number)
]
StringList = Annotated[list[str], BeforeValidator(_string_list)]
Flag = Annotated[bool, BeforeValidator(_flag)]
# A partial config or a bag of params: its fields are checked by the config schema / the service.
JsonObject = dict[str, Any]
