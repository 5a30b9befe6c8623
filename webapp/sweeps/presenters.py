"""A sweep as JSON: what the API answers and what the sweep page polls."""

from __future__ import annotations

from typing import Any

from webapp.sweeps.models import Sweep
from webapp.sweeps.selectors import sweep_trials


def sweep_summary(sweep: Sweep) -> dict[str, Any]:
    return {
        "id": sweep.pk,
        "project": sweep.project_id,
        "name": sweep.name,
        "status": sweep.status,
        "error": sweep.error,
        "preset": sweep.preset,
        "config": sweep.base,
        "method": sweep.method,
        "parameters": sweep.parameters,
        "budget": sweep.budget,
        "launched": sweep.launched,
        "concurrency": sweep.concurrency,
        "metric": sweep.metric,
        "goal": sweep.goal,
        "halving_step": sweep.halving_step,
        "halving_eta": sweep.halving_eta,
        "created_at": sweep.created_at.isoformat(),
        "finished_at": sweep.finished_at.isoformat() if sweep.finished_at else None,
        "created_by": sweep.created_by.get_username() if sweep.created_by else None,
    }


def sweep_detail(sweep: Sweep) -> dict[str, Any]:
    return {**sweep_summary(sweep), "trials": sweep_trials(sweep)}
