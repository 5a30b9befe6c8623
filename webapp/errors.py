"""Friendly error pages (never a traceback); API paths get JSON instead."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader

API_PREFIX = "/api/"


def _respond(request: HttpRequest, status: int, title: str, message: str) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        # A 400 carries ``errors`` like every other 400 of the API (here about the request as a whole).
        extra = {"errors": {"request": message}} if status == 400 else {}
        return JsonResponse({"error": message, **extra}, status=status)
    try:
        body = loader.render_to_string(
            "error.html", {"status": status, "title": title, "message": message}, request
        )
    except Exception:
        # The error page itself failed (a broken template or database): plain text still beats a traceback.
        body = f"<h1>{status} {title}</h1><p>{message}</p>"
    return HttpResponse(body, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _respond(request, 400, "Bad request", "The request could not be understood.")


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    message = str(exception) if exception and str(exception) else "You may not do this here."
    return _respond(request, 403, "Not allowed", message)


def page_not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    return _respond(
        request, 404, "Not found", "There is nothing here, or it belongs to a team you are not in."
    )


def request_too_large(request: HttpRequest, message: str) -> HttpResponse:
    """A body refused before it was read (see webapp.body_limit); the API's error names the body."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": message, "errors": {"body": message}}, status=413)
    return _respond(request, 413, "Request too large", message)


def bad_input(request: HttpRequest, message: str, errors: dict[str, str] | None = None) -> HttpResponse:
    """A 400 for input refused before any view ran; the API's ``errors`` name the fields."""
    if request.path.startswith(API_PREFIX):
        return JsonResponse({"error": message, "errors": errors or {"body": message}}, status=400)
    return _respond(request, 400, "Bad request", message)


def server_error(request: HttpRequest) -> HttpResponse:
    return _respond(request, 500, "Something went wrong", "The error has been logged. Please try again.")
