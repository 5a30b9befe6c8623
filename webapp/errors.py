"""Friendly error pages (never a traceback); API paths get JSON instead."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.template import loader

from webapp.input_errors import InputError, error_body

API_PREFIX = "/api/"


def _respond(
    request: HttpRequest, status: int, title: str, message: str, errors: dict[str, str] | None = None
) -> HttpResponse:
    if request.path.startswith(API_PREFIX):
        if status in (400, 413):
            # Like every refused input of the API: ``errors`` names the fields (or the request as a whole).
            return JsonResponse(error_body(errors or {"request": message}, message), status=status)
        return JsonResponse({"error": message}, status=status)
    try:
        body = loader.render_to_string(
            "error.html", {"status": status, "title": title, "message": message}, request
        )
    except Exception:
        # The error page itself failed (a broken template or database): plain text still beats a traceback.
        body = f"<h1>{status} {title}</h1><p>{message}</p>"
    return HttpResponse(body, status=status)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    if isinstance(exception, InputError):  # one that no view turned into a form's errors
        return _respond(request, 400, "Bad request", str(exception), exception.errors)
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
    return _respond(request, 413, "Request too large", message, {"body": message})


def bad_input(request: HttpRequest, message: str, errors: dict[str, str] | None = None) -> HttpResponse:
    """A 400 for input refused before any view ran; the API's ``errors`` name the fields."""
    return _respond(request, 400, "Bad request", message, errors or {"body": message})


def server_error(request: HttpRequest) -> HttpResponse:
    return _respond(request, 500, "Something went wrong", "The error has been logged. Please try again.")
