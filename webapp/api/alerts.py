"""A project's alert rules and a run's alerts over the API (members write, viewers read).

``GET /api/v1/projects/<id>/alerts`` → ``{"rules": [...], "firings": [...]}`` (the newest 50
firings); ``POST`` with ``{"kind", "key"?, "threshold"?, "after_step"?, "webhook_url"?}`` → the
rule (201); ``DELETE /api/v1/projects/<id>/alerts/<rule_id>`` → 204.
``GET /api/v1/runs/<id>/alerts`` → ``{"id", "alerts": [...]}``, the alerts that fired on the run.
The same services as the project's alerts page (``webapp.alerts.services``).
"""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, JsonResponse

from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.alerts.selectors import alerts_of_run, recent_firings, rule_json, rules_of
from webapp.alerts.services import create_rule, delete_rule
from webapp.api.auth import api_view
from webapp.api.body import json_object
from webapp.projects.selectors import project_for
from webapp.runs.selectors import run_for

RULE_FIELDS = ("kind", "key", "threshold", "after_step", "webhook_url")


@api_view(("GET", "POST"))
def project_alerts(request: HttpRequest, project_id: int) -> JsonResponse:
    project = project_for(request.user, project_id)  # another team's project is a 404 whatever the body
    if request.method == "POST":
        require_role(request.user, project.team_id, Role.MEMBER)  # a viewer's 403 before reading the body
        data = json_object(request, RULE_FIELDS)
        rule = create_rule(
            user=request.user,
            project=project,
            kind=data.get("kind", ""),
            key=data.get("key", ""),
            threshold=data.get("threshold"),
            after_step=data.get("after_step", 0),
            webhook_url=data.get("webhook_url", ""),
        )
        return JsonResponse(rule_json(rule), status=201)
    return JsonResponse(
        {
            "project": project.id,
            "rules": [rule_json(r) for r in rules_of(project)],
            "firings": recent_firings(project),
        }
    )


@api_view(("DELETE",))
def project_alert(request: HttpRequest, project_id: int, rule_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    rule = rules_of(project).filter(pk=rule_id).first()
    if rule is None:
        raise Http404("No such alert rule in this project.")
    delete_rule(user=request.user, rule=rule)
    return HttpResponse(status=204)


@api_view(("GET",))
def run_alerts(request: HttpRequest, run_id: int) -> JsonResponse:
    run = run_for(request.user, run_id)
    return JsonResponse({"id": run.id, "alerts": alerts_of_run(run)})
