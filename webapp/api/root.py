"""The ``/api/v1`` API: one NinjaAPI, its routers, and the OpenAPI schema derived from them.

Every operation is declared once with typed request and response models (``ninja.Schema``,
i.e. pydantic); ninja validates the request against them and builds the schema served at
``/api/v1/openapi.json`` (read by the docs page, ``webapp.api.docs``, and by the
schemathesis test that calls every operation). URL names stay those of the hand-written
views this replaced (``reverse("api:run")``): each operation names its route.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_GET
from ninja import NinjaAPI
from ninja.errors import ValidationError, ValidationErrorContext
from ninja.responses import NinjaJSONEncoder

from webapp.api import (
    alerts,
    errors,
    evals,
    external,
    fleet,
    run_actions,
    run_annotations,
    samples,
    sweeps,
    teams,
    tokens,
    views,
)
from webapp.api.auth import TOKEN
from webapp.api.body import StrictJsonParser

DESCRIPTION = """\
Runwright's HTTP API: projects, runs (launched or external), metrics, eval jobs, sweeps,
teams, tokens, alerts and the fleet. Send `Authorization: Bearer <token>` (create a token on
your account's tokens page, or `python manage.py create_token USERNAME`); a read-only token
may only GET. Another team's object is a 404; a role too low for a write is a 403 naming the
role. Refused input is a 400 `{"error": "...", "errors": {"field.path": "what to fix"}}`.
Lists are paged: pass the `next_cursor` of a page as `?cursor=` to get the next one.
"""


class RunwrightAPI(NinjaAPI):
    def validation_error_from_error_contexts(
        self, error_contexts: list[ValidationErrorContext]
    ) -> ValidationError:
        """ninja's errors, each unknown field told which model refused it (to list what it takes)."""
        found: list[dict[str, Any]] = []
        for context in error_contexts:
            model = context.model
            for error in context.pydantic_validation_error.errors(include_url=False):
                loc = tuple(error["loc"])
                ctx = {k: str(v) if isinstance(v, Exception) else v for k, v in error.get("ctx", {}).items()}
                if error["type"] == "extra_forbidden":
                    ctx["model"] = errors.model_at(model, list(loc[:-1]))
                found.append(
                    {
                        "type": error["type"],
                        "loc": (model.__ninja_param_source__, *loc),
                        "msg": error["msg"],
                        "ctx": ctx,
                    }
                )
        return ValidationError(found)

    def get_root_path(self, path_params: dict[str, Any]) -> str:
        return reverse("api:openapi_json").removesuffix("openapi.json")

    def _get_urls(self) -> list[Any]:
        """The operations' routes, each view told the methods its path takes (for the route tests)."""
        methods: dict[str, tuple[str, ...]] = {}
        for bound in self._get_bound_routers():
            for path_view in bound.path_operations.values():
                allowed = tuple(m for op in path_view.operations for m in op.methods)
                for op in path_view.operations:
                    methods[op.url_name] = allowed
        result: list[Any] = [path("openapi.json", openapi_json, name="openapi_json")]
        for bound in self._get_bound_routers():
            for pattern in bound.urls_paths(bound.prefix):
                assert isinstance(pattern, URLPattern) and pattern.name in methods, pattern
                pattern.callback = _json_405(pattern.callback)
                pattern.callback.api_methods = methods[pattern.name]  # type: ignore[attr-defined]
                result.append(pattern)
        return result


def _json_405(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """ninja answers a method its path does not take in plain text; the API answers JSON."""

    @functools.wraps(view)
    def answer(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        response = view(request, *args, **kwargs)
        if response.status_code != 405:
            return response
        refused = JsonResponse({"error": f"method {request.method} not allowed"}, status=405)
        refused["Allow"] = response["Allow"]
        return refused

    return answer


api = RunwrightAPI(
    title="Runwright API",
    version="1",
    description=DESCRIPTION,
    urls_namespace="api",
    auth=TOKEN,
    parser=StrictJsonParser(),
    docs_url=None,  # ninja's Swagger page loads its JS from a CDN; webapp.api.docs renders ours
)
errors.install(api)


@functools.cache
def openapi_schema() -> dict[str, Any]:
    """The API's schema, built once per process: the routes are fixed at import, and
    ninja takes ~0.3 s to build it, which every docs or schema request paid before."""
    return api.get_openapi_schema()


@functools.cache
def _openapi_json_bytes() -> bytes:
    return json.dumps(openapi_schema(), cls=NinjaJSONEncoder, indent=1).encode()


@require_GET
def openapi_json(request: HttpRequest) -> HttpResponse:
    """The schema, public like the docs page: it describes the API, it holds no data."""
    return HttpResponse(_openapi_json_bytes(), content_type="application/json")


openapi_json.api_methods = ("GET",)  # type: ignore[attr-defined]

# Each router declares its own paths (under /api/v1/), as the hand-written views did.
for module in (
    views,
    run_actions,
    external,
    run_annotations,
    alerts,
    evals,
    sweeps,
    samples,
    teams,
    tokens,
    fleet,
):
    api.add_router("", module.router)
