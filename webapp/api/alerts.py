"""A project's alert rules and a run's alerts over the API (members write, viewers read).

``GET projects/<id>/alerts`` → ``{"rules": [...], "firings": [...]}`` (a page of rules, the
newest 50 firings); ``POST`` with ``{"kind", "key"?, "threshold"?, "after_step"?,
"webhook_url"?}`` → the rule (201); ``DELETE projects/<id>/alerts/<rule_id>`` → 204.
``GET runs/<id>/alerts`` → ``{"id", "alerts": [...]}``, a page of the alerts that fired on the
run. The same services as the project's alerts page (``webapp.alerts.services``).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, HttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.alerts.models import AlertFiring, AlertKind
from webapp.alerts.selectors import firing_json, recent_firings, rule_json, rules_of
from webapp.alerts.services import create_rule, delete_rule
from webapp.api.auth import ApiAuth
from webapp.api.lookups import project_member, project_of, run_of
from webapp.api.pages import PageQuery, keyset_page
from webapp.api.schemas import Open, RequestBody, answers

router = Router(tags=["alerts"])


class Rule(Schema):
    id: int
    kind: str
    key: str
    threshold: float | None
    after_step: int
    webhook_url: str
    description: str
    created_at: str


class Firing(Open):
    id: int
    rule: str
    message: str
    step: int | None
    fired_at: str
    notified_at: str | None
    notify_error: str


class ProjectAlerts(Schema):
    project: int
    rules: list[Rule]
    next_cursor: str | None = Field(description="the next page of rules")
    firings: list[Firing] = Field(description="the newest 50 firings")


class RuleIn(RequestBody):
    kind: Any = Field(
        "", description=f"one of {', '.join(AlertKind.values)}", json_schema_extra={"type": "string"}
    )
    key: Any = Field("", description="a metric's key (metric kinds)", json_schema_extra={"type": "string"})
    threshold: Any = Field(None, description="the bound (above, below)", json_schema_extra={"type": "number"})
    after_step: Any = Field(
        0, description="ignore points before this step", json_schema_extra={"type": "integer"}
    )
    webhook_url: Any = Field("", description="POSTed to when it fires", json_schema_extra={"type": "string"})


@router.get(
    "projects/{int:project_id}/alerts",
    response=answers({200: ProjectAlerts}),
    url_name="project_alerts",
    auth=ApiAuth(guard=project_of),
)
def project_alerts(request: HttpRequest, project_id: int, params: Query[PageQuery]) -> dict[str, Any]:
    project = project_of(request, project_id)
    page = keyset_page(rules_of(project), ("id",), params)
    return {
        "project": project.id,
        "rules": [rule_json(r) for r in page.rows],
        "next_cursor": page.next_cursor,
        "firings": recent_firings(project),
    }


@router.post(
    "projects/{int:project_id}/alerts",
    response=answers({201: Rule}),
    url_name="project_alerts",
    auth=ApiAuth(guard=project_member),  # a viewer's 403 before reading the body
)
def new_alert_rule(request: HttpRequest, project_id: int, payload: RuleIn | None = None) -> Status:
    """A rule; its fields are checked by the alerts service, each refusal keyed by its field."""
    payload = payload or RuleIn()
    rule = create_rule(user=request.user, project=project_of(request, project_id), **payload.model_dump())
    return Status(201, rule_json(rule))


@router.delete(
    "projects/{int:project_id}/alerts/{int:rule_id}",
    response=answers({204: None}),
    url_name="project_alert",
    auth=ApiAuth(guard=project_of),
)
def remove_alert_rule(request: HttpRequest, project_id: int, rule_id: int) -> HttpResponse:
    rule = rules_of(project_of(request, project_id)).filter(pk=rule_id).first()
    if rule is None:
        raise Http404("No such alert rule in this project.")
    delete_rule(user=request.user, rule=rule)
    return HttpResponse(status=204)


class RunAlerts(Schema):
    id: int
    alerts: list[Firing]
    next_cursor: str | None


@router.get(
    "runs/{int:run_id}/alerts",
    response=answers({200: RunAlerts}),
    url_name="run_alerts",
    auth=ApiAuth(guard=run_of),
)
def run_alerts(request: HttpRequest, run_id: int, params: Query[PageQuery]) -> dict[str, Any]:
    """The alerts that fired on the run, newest first."""
    run = run_of(request, run_id)
    firings = AlertFiring.objects.filter(run=run).select_related("rule")
    page = keyset_page(firings, ("-id",), params)
    return {"id": run.id, "alerts": [firing_json(f) for f in page.rows], "next_cursor": page.next_cursor}
