"""Typed reads of JSON body fields: the wrong type is a 400 that names the field."""

from __future__ import annotations

from webapp.api.auth import ApiError


def string(value: object, field: str) -> str:
    if not isinstance(value, str):
        raise ApiError(400, {"errors": {field: "must be a string"}})
    return value


def whole_number(value: object, field: str) -> int:
    if isinstance(value, bool):
        raise ApiError(400, {"errors": {field: "must be a whole number"}})
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ApiError(400, {"errors": {field: "must be a whole number"}}) from None


def optional_whole_number(value: object, field: str) -> int | None:
    return None if value is None or value == "" else whole_number(value, field)


def string_list(value: object, field: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ApiError(400, {"errors": {field: "must be a list of strings"}})
    return value
