"""Bearer-token authentication and JSON error handling for the API views.

Refused input (``webapp.input_errors.InputError``, the config's ``ConfigError``) is a 400
naming the fields, answered by ``input_errors_as_json`` like the pages' JSON endpoints.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from webapp.accounts.services import token_for_secret
from webapp.input_errors import input_errors_as_json

# What a read-only token may send; every other method writes.
READ_METHODS = ("GET", "HEAD", "OPTIONS")


def bearer_secret(request: HttpRequest) -> str:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


def api_view(methods: tuple[str, ...], *, allow_session: bool = False) -> Callable:
    """Token-authenticated JSON view: 401/403/404/405/400 always come back as JSON, never as a page.

    CSRF does not apply: a bearer token is not sent by a browser on its own, unlike a
    cookie. ``allow_session`` also accepts the logged-in browser, only for views that
    change nothing (the new-run form's estimate).
    """

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        answer = input_errors_as_json(view)

        @csrf_exempt
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if request.method not in methods:
                response = JsonResponse({"error": f"method {request.method} not allowed"}, status=405)
                response["Allow"] = ", ".join(methods)
                return response
            secret = bearer_secret(request)
            token = token_for_secret(secret)
            user = token.user if token else None
            if user is None and not secret and allow_session and request.user.is_authenticated:
                user = request.user
            if user is None:
                # An expired or revoked token is refused like an unknown one, at once.
                response = JsonResponse(
                    {
                        "error": "authentication required: send 'Authorization: Bearer <token>' with a "
                        "valid token (create one on your account's tokens page, or with "
                        "`python manage.py create_token USERNAME`)"
                    },
                    status=401,
                )
                response["WWW-Authenticate"] = 'Bearer realm="runwright"'
                return response
            if token is not None and token.read_only and request.method not in READ_METHODS:
                return JsonResponse(
                    {"error": f"this token is read-only: {request.method} needs a token with write access"},
                    status=403,
                )
            request.user = user
            try:
                return answer(request, *args, **kwargs)
            except Http404:
                return JsonResponse({"error": "not found"}, status=404)
            except PermissionDenied as exc:
                return JsonResponse({"error": str(exc) or "permission denied"}, status=403)

        # What the route accepts, for the tests that walk every API route with every method.
        wrapper.api_methods = methods  # type: ignore[attr-defined]
        return wrapper

    return decorate
