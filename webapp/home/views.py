from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from webapp.home.selectors import home_for
from webapp.home.services import record_visit


@login_required
@require_GET
def home(request: HttpRequest) -> HttpResponse:
    """What runs now across the person's teams, and what ended since their last visit."""
    since = record_visit(request.user)
    return render(request, "home/home.html", home_for(request.user, since))
