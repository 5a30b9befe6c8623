"""What a person's home page shows: their teams' runs now, and what ended since their last visit."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone

from webapp.alerts.models import AlertFiring
from webapp.runs.models import ACTIVE_STATUSES, RunStatus
from webapp.runs.presenters import run_summary
from webapp.runs.selectors import runs_visible_to

FIRST_VISIT_WINDOW = dt.timedelta(days=7)  # a first visit shows the last week
LIMIT = 50  # runs per section; the project pages list the rest
ENDED = (RunStatus.FAILED, RunStatus.LOST, RunStatus.COMPLETED, RunStatus.CANCELLED)


def _row(run: Any) -> dict[str, Any]:
    return {
        **run_summary(run),
        "project": {"id": run.project_id, "name": run.project.name},
        "team": run.project.team.name,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
    }


def home_for(user: AbstractBaseUser, since: dt.datetime | None) -> dict[str, Any]:
    """Running runs across the user's teams, and the runs that ended after ``since`` by how they ended."""
    start = since or timezone.now() - FIRST_VISIT_WINDOW
    runs = runs_visible_to(user)
    running = runs.filter(status__in=ACTIVE_STATUSES).order_by("-created_at", "-id")
    ended = runs.filter(status__in=ENDED, finished_at__gt=start).order_by("-finished_at", "-id")
    by_status: dict[str, list[dict[str, Any]]] = {status: [] for status in ENDED}
    counts = dict.fromkeys(ENDED, 0)
    for run in ended[: LIMIT * 4]:
        counts[run.status] += 1
        if len(by_status[run.status]) < LIMIT:
            by_status[run.status].append(_row(run))
    alerts = (
        AlertFiring.objects.filter(run__in=runs, fired_at__gt=start)
        .select_related("run", "run__project")
        .order_by("-id")[:LIMIT]
    )
    return {
        "since": start,
        "alerts": [
            {"message": a.message, "run": _row(a.run), "fired_at": a.fired_at.isoformat()} for a in alerts
        ],
        "first_visit": since is None,
        "running": [_row(r) for r in running[:LIMIT]],
        "running_count": running.count(),
        "ended": [{"status": status, "runs": by_status[status], "count": counts[status]} for status in ENDED],
    }
