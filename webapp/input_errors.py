"""Input refused with a message per field: one exception type, answered in one way per surface.

A service raises ``InputError({"name": "must not be empty"})``; the engine's
``modelcore.config.ConfigError`` (kept free of Django) carries the same ``errors`` dict
keyed by field path. Both are turned into a response here and nowhere else:

- the API (``webapp.api.auth.api_view``) and the pages' JSON endpoints
  (``input_errors_as_json``) answer 400 with ``{"error": summary, "errors": {field: message}}``;
- a page's form (``FormInputErrors.submit``) puts each message on its field and the view
  answers 400 with the form shown again.

``InputError`` is also Django's ``BadRequest``, so one that no view expected is a 400 page
(``webapp.errors.bad_request``), never a 500.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from django.core.exceptions import BadRequest
from django.http import HttpRequest, HttpResponse, JsonResponse

from modelcore.config import ConfigError

T = TypeVar("T")


class InputError(ValueError, BadRequest):
    """Input that cannot be used as given; ``errors`` maps a field (or field path) to what to fix."""

    def __init__(self, errors: Mapping[str, str], *, message: str | None = None):
        self.errors = dict(errors)
        super().__init__(message or _summary(self.errors))


# What a handler here catches: the web's own errors and the config schema's.
INPUT_ERRORS = (InputError, ConfigError)


def error_body(errors: Mapping[str, str], message: str | None = None) -> dict[str, Any]:
    """The JSON of every refused input: ``error`` for a person, ``errors`` for a client to place."""
    return {"error": message or _summary(errors), "errors": dict(errors)}


def _summary(errors: Mapping[str, str]) -> str:
    return "; ".join(f"{key}: {message}" for key, message in errors.items())


def input_errors_as_json(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """A JSON view whose ``InputError`` or ``ConfigError`` is a 400 naming the fields."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except INPUT_ERRORS as exc:
            return JsonResponse(error_body(exc.errors, str(exc)), status=400)

    return wrapper


class FormInputErrors:
    """For a form whose values a service checks further: the service's errors go on the fields.

    ``error_fields`` maps a service's key to the form field that holds it where their names
    differ (the run page's eval form asks for a ``step``; the service speaks of ``models``).
    A key with no field is shown above the form, prefixed with the key.
    """

    error_fields: dict[str, str] = {}

    def add_input_errors(self, exc: InputError | ConfigError) -> None:
        for key, message in exc.errors.items():
            name = self.error_fields.get(key, key)
            if name in self.fields:  # type: ignore[attr-defined]
                self.add_error(name, message)  # type: ignore[attr-defined]
            else:
                self.add_error(None, f"{key}: {message}")  # type: ignore[attr-defined]

    def submit(self, service: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | None:
        """``service(*args, **kwargs)``, or None with its input errors shown on this form."""
        try:
            return service(*args, **kwargs)
        except INPUT_ERRORS as exc:
            self.add_input_errors(exc)
            return None
