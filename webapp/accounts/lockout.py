"""The page django-axes shows instead of the login form once a login is locked out."""

from __future__ import annotations

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

# 429 Too Many Requests: what a client or a proxy expects from throttling.
LOCKED_OUT_STATUS = 429


def locked_out(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    """Say the login is locked and for how long, without telling whether the password was right.

    Called by django-axes (``AXES_LOCKOUT_CALLABLE``) for a locked-out username and address.
    """
    minutes = max(1, round(settings.AXES_COOLOFF_TIME.total_seconds() / 60))
    context = {"minutes": minutes, "failure_limit": settings.AXES_FAILURE_LIMIT}
    return render(request, "registration/locked_out.html", context, status=LOCKED_OUT_STATUS)
