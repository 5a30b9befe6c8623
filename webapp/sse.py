"""Server-sent events on the wire: one event's text, and the response that streams a body of them.

Every live page's stream (a run, the runs list, a sweep, the Fleet, a process job) is made of
these, so the event format, the headers that keep proxies from buffering and the endpoint's
answer to a visitor not logged in are written once.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET


def sse(event: str, data: dict[str, Any] | str, event_id: str | None = None) -> str:
    """One SSE event; ``data`` is the payload, or its JSON when that is already made."""
    head = f"id: {event_id}\n" if event_id else ""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}event: {event}\ndata: {text}\n\n"


def sse_response(body: AsyncIterator[str]) -> StreamingHttpResponse:
    """The response that streams an SSE body to the browser as each event is made."""
    response = StreamingHttpResponse(body, content_type="text/event-stream")
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx would otherwise hold events back
    return response


def sse_view(view: Callable[..., Awaitable[HttpResponse]]) -> Callable[..., Awaitable[HttpResponse]]:
    """An SSE endpoint: GET only, called as ``view(request, user, **url_kwargs)`` for a logged-in user.

    A visitor not logged in gets a 401, not the login page's redirect: an EventSource cannot
    follow one (it would retry for ever), and the page's live code falls back to polling.
    """

    @require_GET
    @functools.wraps(view)
    async def endpoint(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        user = await request.auser()
        if not user.is_authenticated:
            return JsonResponse({"error": "log in first"}, status=401)
        return await view(request, user, *args, **kwargs)

    return endpoint
