"""Request bodies over ``settings.MAX_BODY_MB`` are refused with 413 before anything reads them whole.

Two guards, because the two ways a request arrives read bodies differently:

- ``BodyLimitMiddleware`` (Django) refuses a declared ``Content-Length`` over the limit
  before CSRF, a form or a view touches ``request.body``. This covers WSGI, the test
  client and every ASGI request that declares its length.
- ``BodyLimitASGI`` wraps the ASGI application, because Django's ASGI handler spools the
  whole body to a temporary file before any middleware runs, and a chunked body declares
  no length at all. It counts bytes as they arrive and answers 413 the moment the count
  passes the limit, so a client that streams without end fills neither memory nor disk.

Uploads (eval task folders, imported results) are bodies too: their own, smaller limits
are checked by their forms once the body is in.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from webapp.errors import API_PREFIX, bad_input, request_too_large
from webapp.whole_numbers import parse_whole_number

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def max_body_bytes() -> int:
    return int(settings.MAX_BODY_MB) * 1024 * 1024


def too_large_message() -> str:
    return (
        f"the request body is larger than {settings.MAX_BODY_MB} MB, the limit "
        "(an operator sets it with RUNWRIGHT_MAX_BODY_MB)"
    )


class BodyLimitMiddleware(MiddlewareMixin):
    """413 for a declared length over the limit; 400 for a length that is not a number."""

    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        declared = request.META.get("CONTENT_LENGTH") or ""
        if not declared:
            return None
        length = parse_whole_number(declared.strip())
        if length is None or length < 0:
            # Django's own request.body would raise ValueError (a 500) on this header.
            return bad_input(request, "the Content-Length header must be a whole number of bytes")
        if length > max_body_bytes():
            return request_too_large(request, too_large_message())
        return None


class BodyLimitASGI:
    """ASGI wrapper that stops reading a body at the limit and answers 413 itself."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = max_body_bytes()
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _send_413(scope, send)
            return
        received = 0
        refused = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await _send_413(scope, send)
                    # Django's handler takes this as the client going away: it drops the
                    # spooled body and sends nothing, so ours is the only response.
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, counted_receive, guarded_send)


def _declared_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length":
            return parse_whole_number(value.decode("latin-1").strip())
    return None


async def _send_413(scope: Scope, send: Send) -> None:
    message = too_large_message()
    if scope.get("path", "").startswith(API_PREFIX):
        body = json.dumps({"error": message, "errors": {"body": message}}).encode()
        content_type = b"application/json"
    else:
        body = f"413 Request too large: {message}".encode()
        content_type = b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", content_type),
                (b"content-length", str(len(body)).encode()),
                # The rest of the body is not read: the connection cannot carry another request.
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
