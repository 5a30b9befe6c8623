"""A project's alerts page: its rules (members add and delete them) and what they raised."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role, require_role
from webapp.alerts.models import AlertKind
from webapp.alerts.selectors import recent_firings, rule_for, rules_of
from webapp.alerts.services import create_rule, delete_rule
from webapp.input_errors import InputError
from webapp.projects.selectors import project_for


@login_required
@require_http_methods(["GET", "POST"])
def project_alerts(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    errors: dict[str, str] = {}
    if request.method == "POST":
        require_role(request.user, project.team_id, Role.MEMBER)
        try:
            create_rule(
                user=request.user,
                project=project,
                kind=request.POST.get("kind", ""),
                key=request.POST.get("key", ""),
                threshold=request.POST.get("threshold", ""),
                after_step=request.POST.get("after_step", ""),
                webhook_url=request.POST.get("webhook_url", ""),
            )
        except InputError as exc:
            errors = exc.errors
        else:
            messages.success(request, "Alert rule added.")
            return redirect("alerts:project", project_id=project.id)
    return render(
        request,
        "alerts/project.html",
        {
            "project": project,
            "rules": rules_of(project),
            "firings": recent_firings(project),
            "kinds": AlertKind.choices,
            "errors": errors,
            "form": request.POST if request.method == "POST" else {},
            "can_edit": has_role(request.user, project.team_id, Role.MEMBER),
        },
        status=400 if errors else 200,
    )


@login_required
@require_POST
def delete_alert_rule(request: HttpRequest, rule_id: int) -> HttpResponse:
    rule = rule_for(request.user, rule_id)
    delete_rule(user=request.user, rule=rule)
    messages.success(request, "Alert rule deleted.")
    return redirect("alerts:project", project_id=rule.project_id)
