"""Who calls the API: a bearer token (or, for a few read-only helpers, the logged-in browser).

``ApiAuth`` is the ninja auth of every operation. After the caller is known it runs the
operation's ``guard`` (the object lookup, and the role a write needs) before ninja reads a
query parameter or the body, so another team's object is a 404 and a viewer's write a 403
whatever the request carries: a malformed body tells Charlie nothing.

CSRF does not apply: a bearer token is not sent by a browser on its own, unlike a cookie,
and the session is accepted only where nothing changes (the new-run form's estimate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.http import HttpRequest
from ninja.security import HttpBearer

from webapp.accounts.services import token_for_secret

# What a read-only token may send; every other method writes.
READ_METHODS = ("GET", "HEAD", "OPTIONS")

# Looks up what the path names (raising Http404 or PermissionDenied); the path's converted kwargs.
Guard = Callable[..., Any]


class ReadOnlyToken(Exception):
    """A write sent with a read-only token: a 403 that says so."""


def bearer_secret(request: HttpRequest) -> str:
    scheme, _, secret = request.headers.get("Authorization", "").partition(" ")
    return secret.strip() if scheme.lower() == "bearer" else ""


class ApiAuth(HttpBearer):
    """A usable token's user (an expired or revoked token is refused like an unknown one)."""

    def __init__(self, *, allow_session: bool = False, guard: Guard | None = None) -> None:
        self.allow_session = allow_session
        self.guard = guard
        super().__init__()

    def __call__(self, request: HttpRequest) -> Any:
        # ninja's HttpBearer returns nothing without a bearer header; here the session may still
        # count, so the header is read here and every request reaches ``authenticate``.
        return self.authenticate(request, bearer_secret(request))

    def authenticate(self, request: HttpRequest, secret: str) -> Any:
        token = token_for_secret(secret)
        user = token.user if token else None
        if user is None and not secret and self.allow_session and request.user.is_authenticated:
            user = request.user
        if user is None:
            return None  # ninja answers AuthenticationError: a 401 (webapp.api.errors)
        if token is not None and token.read_only and request.method not in READ_METHODS:
            raise ReadOnlyToken(f"this token is read-only: {request.method} needs a token with write access")
        request.user = user
        if self.guard is not None:
            match = request.resolver_match
            self.guard(request, **(match.kwargs if match else {}))
        return user


TOKEN = ApiAuth()
