"""``{% load evals %}{% run_eval_panel run %}``: the run page's evaluations panel."""

from __future__ import annotations

from typing import Any

from django import template

from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role
from webapp.evals.comparison import build_report
from webapp.evals.selectors import eval_jobs_of_run
from webapp.evals.sources import available_tasks

register = template.Library()


@register.inclusion_tag("evals/_run_panel.html", takes_context=True)
def run_eval_panel(context: template.Context, run: Any) -> dict[str, Any]:
    user = context["request"].user
    jobs = eval_jobs_of_run(user, run)
    can_evaluate = has_role(user, run.project.team_id, Role.MEMBER)
    return {
        "run": run,
        "jobs": [{"job": j, "rows": build_report([j]).tasks} for j in jobs],
        "can_evaluate": can_evaluate,
        "steps": list(run.checkpoints.order_by("-step").values_list("step", flat=True))
        if can_evaluate
        else [],
        "tasks": available_tasks(run.project) if can_evaluate else [],
        "csrf_token": context.get("csrf_token"),
        "request": context["request"],
    }
