"""Alert rules and firings as one user may see them (the project or run was checked visible first)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import QuerySet
from django.http import Http404

from webapp.alerts.models import AlertFiring, AlertRule
from webapp.projects.models import Project
from webapp.projects.selectors import projects_visible_to
from webapp.runs.models import Run


def rules_of(project: Project) -> QuerySet[AlertRule]:
    return AlertRule.objects.filter(project=project).order_by("id")


def rule_for(user: AbstractBaseUser, rule_id: int) -> AlertRule:
    """The rule if ``user`` sees its project; another team's rule raises Http404."""
    rule = (
        AlertRule.objects.filter(pk=rule_id, project__in=projects_visible_to(user))
        .select_related("project")
        .first()
    )
    if rule is None:
        raise Http404("No such alert rule.")
    return rule


def rule_json(rule: AlertRule) -> dict[str, Any]:
    """A rule as the API shows it. The webhook URL is shown whole: it is the team's own secret."""
    return {
        "id": rule.id,
        "kind": rule.kind,
        "key": rule.key,
        "threshold": rule.threshold,
        "after_step": rule.after_step,
        "webhook_url": rule.webhook_url,
        "description": rule.describe(),
        "created_at": rule.created_at.isoformat(),
    }


def firing_json(firing: AlertFiring) -> dict[str, Any]:
    return {
        "id": firing.id,
        "rule": firing.rule.describe(),
        "message": firing.message,
        "step": firing.step,
        "fired_at": firing.fired_at.isoformat(),
        "notified_at": firing.notified_at.isoformat() if firing.notified_at else None,
        "notify_error": firing.notify_error,
    }


def alerts_of_run(run: Run) -> list[dict[str, Any]]:
    return [
        firing_json(f) for f in AlertFiring.objects.filter(run=run).select_related("rule").order_by("-id")
    ]


def recent_firings(project: Project, limit: int = 50) -> list[dict[str, Any]]:
    firings = AlertFiring.objects.filter(rule__project=project).select_related("rule", "run").order_by("-id")
    return [{**firing_json(f), "run": {"id": f.run_id, "name": f.run.name}} for f in firings[:limit]]
