"""The run page's tags, note and alerts panel (as ``evals`` renders its panel on the same page)."""

from __future__ import annotations

from typing import Any

from django import template

from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role
from webapp.alerts.selectors import alerts_of_run
from webapp.annotations.selectors import note_of
from webapp.annotations.services import run_tags

register = template.Library()


@register.inclusion_tag("annotations/_run_panel.html", takes_context=True)
def run_annotations_panel(context: template.Context, run: Any) -> dict[str, Any]:
    request = context["request"]
    return {
        "run": run,
        "tags": run_tags(run),
        "note": note_of(run),
        "alerts": alerts_of_run(run),
        "can_edit": has_role(request.user, run.project.team_id, Role.MEMBER),
        "csrf_token": context.get("csrf_token"),
    }
