"""Every refusal of the API in one JSON shape, whichever layer refused.

Refused input is a 400 ``{"error": summary, "errors": {field path: message}}``
(``webapp.input_errors.error_body``), whether a service raised ``InputError`` or
``ConfigError``, the body parser found malformed JSON, or a typed request model
(pydantic, through ninja) refused a field. Anything else is ``{"error": message}``
with its status: 401 (no usable token), 403 (role, read-only token), 404 (not found,
or another team's), 409 (an external run that has ended).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, get_args, get_origin

import pydantic
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from ninja.errors import AuthenticationError, HttpError, ValidationError

from webapp.api.auth import ReadOnlyToken
from webapp.api.body import MAX_ERRORS
from webapp.external.services import RunEnded
from webapp.input_errors import INPUT_ERRORS, error_body

if TYPE_CHECKING:
    from ninja import NinjaAPI

UNAUTHENTICATED = (
    "authentication required: send 'Authorization: Bearer <token>' with a valid token (create one on "
    "your account's tokens page, or with `python manage.py create_token USERNAME`)"
)
# Where a request field comes from, as ninja names it: dropped from the field path.
SOURCES = {"body", "query", "path", "header", "cookie", "form", "file"}
# What a client should fix, for pydantic's error types (the rest keep pydantic's message).
MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be a whole number written with digits 0-9, e.g. 12",
    "int_parsing": "must be a whole number written with digits 0-9, e.g. 12",
    "int_from_float": "must be a whole number written with digits 0-9, e.g. 12",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "dict_type": "must be an object",
    "model_type": 'must be a JSON object, e.g. {"name": "..."}',
    "model_attributes_type": 'must be a JSON object, e.g. {"name": "..."}',
    "list_type": "must be a list",
}


def install(api: NinjaAPI) -> None:
    """Register the handlers on ``api``; an exception no handler knows is Django's 500."""

    def json(request: HttpRequest, body: dict[str, Any], status: int) -> HttpResponse:
        return api.create_response(request, body, status=status)

    def refused_input(request: HttpRequest, exc: Exception) -> HttpResponse:
        return json(request, error_body(exc.errors, str(exc)), 400)  # type: ignore[attr-defined]

    def invalid(request: HttpRequest, exc: ValidationError) -> HttpResponse:
        errors = field_errors(exc.errors)
        return json(request, error_body(errors), 400)

    def invalid_model(request: HttpRequest, exc: pydantic.ValidationError) -> HttpResponse:
        # A model built in a view from an empty body (``Model()``): the same field errors.
        return json(request, error_body(field_errors(exc.errors(include_url=False))), 400)

    def http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
        cause = exc.__cause__
        if isinstance(cause, INPUT_ERRORS):  # the body parser's (webapp.api.body.StrictJsonParser)
            return refused_input(request, cause)
        if exc.status_code == 400:
            return json(request, error_body({"body": exc.message}), 400)
        return json(request, {"error": exc.message}, exc.status_code)

    def unauthenticated(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
        response = json(request, {"error": UNAUTHENTICATED}, 401)
        response["WWW-Authenticate"] = 'Bearer realm="runwright"'
        return response

    def not_found(request: HttpRequest, exc: Exception) -> HttpResponse:
        return json(request, {"error": "not found"}, 404)

    def forbidden(request: HttpRequest, exc: Exception) -> HttpResponse:
        return json(request, {"error": str(exc) or "permission denied"}, 403)

    def ended(request: HttpRequest, exc: RunEnded) -> HttpResponse:
        return json(request, {"error": str(exc), "status": exc.run.status}, 409)

    for kind in INPUT_ERRORS:
        api.add_exception_handler(kind, refused_input)
    api.add_exception_handler(ValidationError, invalid)
    api.add_exception_handler(pydantic.ValidationError, invalid_model)
    api.add_exception_handler(AuthenticationError, unauthenticated)
    api.add_exception_handler(HttpError, http_error)
    api.add_exception_handler(Http404, not_found)
    api.add_exception_handler(PermissionDenied, forbidden)
    api.add_exception_handler(ReadOnlyToken, forbidden)
    api.add_exception_handler(RunEnded, ended)


def field_errors(errors: list[dict[str, Any]]) -> dict[str, str]:
    """pydantic's errors as ``{"config.train": "must be an object"}``: one message per field path."""
    result: dict[str, str] = {}
    for error in errors:
        loc = [part for part in error["loc"] if part not in SOURCES]
        model = error.get("ctx", {}).get("model")  # set by RunwrightAPI for unknown fields
        if loc and isinstance(loc[0], str) and loc[0] in PARAM_NAMES:
            loc = loc[1:]  # the view's parameter name ("payload") is not a field of the request
        path = field_path(loc) or "body"
        if error["type"] == "extra_forbidden":
            message = unknown_field_message(model)
        elif error["type"] == "value_error":
            message = str(error.get("ctx", {}).get("error", error["msg"]))
        elif error["type"] in ("literal_error", "enum"):
            message = f"must be one of {error.get('ctx', {}).get('expected', '')}".replace("'", "")
        else:
            message = MESSAGES.get(error["type"], error["msg"])
        if path == "body" and error["type"] in ("model_type", "model_attributes_type", "dict_type"):
            message = 'the body must be a JSON object, e.g. {"name": "..."}'
        result.setdefault(path, message)
        if len(result) >= MAX_ERRORS:
            break
    return result


# The names views give their typed body and query parameters (see the routers).
PARAM_NAMES = {"payload", "params"}


def field_path(loc: list[Any]) -> str:
    """``["points", 0, "key"]`` → ``points[0].key``, as the services name fields."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path


def unknown_field_message(model: type[pydantic.BaseModel] | None) -> str:
    fields = [info.alias or name for name, info in model.model_fields.items()] if model else []
    return (
        f"unknown field; expected {', '.join(fields)}"
        if fields
        else "unknown field; this endpoint takes no fields"
    )


def model_at(model: type[pydantic.BaseModel], loc: list[Any]) -> type[pydantic.BaseModel] | None:
    """The model class that holds the field at ``loc`` (for naming the fields it expects)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            args = get_args(current)
            current = args[0] if args else None
            continue
        fields = getattr(current, "model_fields", None)
        if not fields or part not in fields:
            return None
        current = _model_in(fields[part].annotation)
    return current if isinstance(current, type) and issubclass(current, pydantic.BaseModel) else None


def _model_in(annotation: Any) -> Any:
    """The model inside ``Model | None`` or ``list[Model]``; the annotation itself otherwise."""
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        return annotation
    if get_origin(annotation) in (list,):
        return annotation
    for arg in get_args(annotation):
        if isinstance(arg, type) and issubclass(arg, pydantic.BaseModel):
            return arg
    return annotation
