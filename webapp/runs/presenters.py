"""Plain-data views of a run, shared by pages, polling endpoints, streams and the API."""

from __future__ import annotations

from typing import Any

from django.urls import reverse

from webapp.runs.models import FINAL_STATUSES, Run, RunAttempt, RunLog


def run_state(run: Run) -> dict[str, Any]:
    """What changes while a run runs, besides its points, logs and clock: what a live page
    follows (a change of it is news), and the part of every other view of a run that moves."""
    return {
        "status": run.status,
        "step": run.step,
        "last_loss": run.last_loss,
        "cancel_requested": run.cancel_requested,
        "error": run.error if run.status in FINAL_STATUSES else "",
    }


def run_summary(run: Run) -> dict[str, Any]:
    """What a runs list shows for one run: its state, and what names and places it."""
    return {
        **run_state(run),
        "id": run.id,
        "name": run.name,
        "preset": run.preset,
        "source": run.source,
        "is_final": run.status in FINAL_STATUSES,
        "archived": run.archived,
        "max_steps": (run.config.get("train") or {}).get("max_steps"),
        "duration_s": duration_s(run),
        "created_at": run.created_at.isoformat() if run.created_at else None,
        "url": reverse("runs:detail", args=[run.id]),
    }


def duration_s(run: Run) -> float | None:
    return _round(run.duration_seconds)


def run_detail(run: Run) -> dict[str, Any]:
    """Everything the API says about one run."""
    return {
        **run_summary(run),
        "project": run.project_id,
        "sweep": run.sweep_id,
        "config": run.config,
        "error": run.error,  # also while it runs (a lost run's reason)
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "heartbeat_at": run.heartbeat_at.isoformat() if run.heartbeat_at else None,
        "attempt": run.attempt,
        "attempts": [attempt_json(a) for a in run.attempts.all()],
    }


def attempt_json(attempt: RunAttempt) -> dict[str, Any]:
    """One start of the run: how, when, where, and how and why it ended (empty status: still on)."""
    return {
        "number": attempt.number,
        "kind": attempt.kind,
        "from_step": attempt.from_step,
        "worker": attempt.worker,
        "started_at": attempt.started_at.isoformat(),
        "ended_at": attempt.ended_at.isoformat() if attempt.ended_at else None,
        "status": attempt.status,
        "reason": attempt.reason,
    }


def log_line(log: RunLog) -> dict[str, Any]:
    return {"seq": log.seq, "time": log.time, "level": log.level, "message": log.message}


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 1)
