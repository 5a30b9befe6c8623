"""Query parameters holding a NUL character are a 400 before any view reads them.

Views pass query parameters (a metric key, a task name) straight into database filters,
and PostgreSQL refuses NUL in text (psycopg raises DataError: a 500), while SQLite simply
finds nothing. No parameter of this app has a use for NUL, so it is refused once, here,
with the parameter named. (A raw NUL cannot be in a request line; only ``%00`` decodes
to one, and lone surrogates cannot arise: Django decodes query strings with
``errors="replace"``.)
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.utils.deprecation import MiddlewareMixin

from webapp.errors import API_PREFIX, bad_input


class QueryTextMiddleware(MiddlewareMixin):
    def process_request(self, request: HttpRequest) -> HttpResponse | None:
        if "%00" not in request.META.get("QUERY_STRING", ""):
            return None
        names = sorted(
            {
                name
                for name, values in request.GET.lists()
                if "\x00" in name or any("\x00" in v for v in values)
            }
        )
        errors = {name: "must not contain NUL characters (%00)" for name in names}
        message = "query parameters must not contain NUL characters (%00): " + ", ".join(map(repr, names))
        return bad_input(request, message, errors if request.path.startswith(API_PREFIX) else None)
