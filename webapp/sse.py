"""Server-sent events on the wire: one event's text, and the response that streams a body of them.

Every live page's stream (a run, the runs list, a sweep, the Fleet, a process job) is made of
these, so the event format and the headers that keep proxies from buffering are written once.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from django.http import StreamingHttpResponse


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
