"""Every status change of an eval job, and the worker side's other writes to it.

Status changes are moves of ``EVAL_STATES`` (the table of allowed changes, next to the
model): conditional UPDATEs (``WHERE status = ...``), so the web
(cancelling) and a worker (finishing) can never overwrite each other, and a
second delivery of the same task finds nothing to claim. Heartbeats and the
stale-job sweep use the database's clock (``Now()``), never a worker's.

Every change a job page shows (status, progress, cancel) is announced after it commits:
the job's state on its live channel (``webapp.live.eval_channel``), which the page's
stream forwards (``webapp.evals.stream``).
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

from django.db import transaction
from django.db.models.functions import Now

from webapp import live, requeue
from webapp.evals.models import EVAL_STATES, EvalJob, EvalStatus
from webapp.evals.presenters import job_state
from webapp.metrics.services import Point, upsert_points

log = logging.getLogger(__name__)


def announce(job_id: int) -> None:
    """Publish the job's state once the current transaction commits (at once outside one)."""
    if live.enabled():
        transaction.on_commit(lambda: _publish(job_id))


def _publish(job_id: int) -> None:
    try:
        job = EvalJob.objects.filter(pk=job_id).first()
        if job is not None:
            live.publish_to(live.eval_channel(job_id), job_state(job))
    except Exception:  # a Redis outage only delays the page: its stream re-reads the database
        log.warning("eval job %s: could not publish its state", job_id, exc_info=True)


def claim(job_id: int, worker: str) -> EvalJob | None:
    """Move a queued job to ``running`` for this worker; None when it was not queued."""
    claimed = EVAL_STATES.move(
        EvalJob.objects.filter(pk=job_id, cancel_requested=False),
        EvalStatus.RUNNING,
        worker=worker[:200],
        started_at=Now(),
        heartbeat_at=Now(),
        progress=0.0,
        error="",
    )
    if not claimed:
        return None
    announce(job_id)
    return EvalJob.objects.select_related("run", "project").get(pk=job_id)


def record_process(job_id: int, pid: int) -> None:
    EvalJob.objects.filter(pk=job_id, status=EvalStatus.RUNNING).update(pid=pid, heartbeat_at=Now())


def record_progress(job_id: int, progress: float, current_task: str) -> bool:
    """Store progress and refresh the heartbeat; returns whether a cancel was requested."""
    EvalJob.objects.filter(pk=job_id, status=EvalStatus.RUNNING).update(
        progress=max(0.0, min(1.0, progress)), current_task=current_task[:200], heartbeat_at=Now()
    )
    announce(job_id)
    return bool(EvalJob.objects.filter(pk=job_id, cancel_requested=True).exists())


def finish(
    job_id: int,
    status: str,
    *,
    error: str = "",
    results: dict[str, Any] | None = None,
    has_samples: bool = False,
) -> bool:
    """Write the final state of a running job; for a periodic job, its scores become run metric points."""
    fields: dict[str, Any] = {"error": error, "finished_at": Now(), "pid": None}
    if status == EvalStatus.COMPLETED:
        fields.update(progress=1.0, results=results, has_samples=has_samples, current_task="")
    with transaction.atomic():
        row = EvalJob.objects.filter(pk=job_id)
        done = EVAL_STATES.move(row, status, sources=[EvalStatus.RUNNING], **fields) == 1
        if done and status == EvalStatus.COMPLETED:
            job = EvalJob.objects.get(pk=job_id)
            if job.periodic and job.run_id is not None and job.checkpoint_step is not None and results:
                upsert_points(job.run_id, eval_points(results, job.checkpoint_step))
        if done:
            announce(job_id)
    return done


def eval_points(results: dict[str, Any], step: int) -> list[Point]:
    """``eval/<task>/<metric>`` points (and their stderrs) at ``step``, for the run's charts."""
    from modelcore.evaluation.results import task_scores

    now = time.time()
    points = []
    for task, metrics in task_scores(results).items():
        for metric, (value, stderr) in metrics.items():
            points.append(Point(f"eval/{task}/{metric}", step, value, now))
            if stderr is not None:
                points.append(Point(f"eval/{task}/{metric}_stderr", step, stderr, now))
    return points


def fail_stale_jobs(older_than_seconds: float) -> list[int]:
    """Mark running jobs whose worker stopped heartbeating as failed (the worker was killed or lost)."""
    stale = EVAL_STATES.fail_silent(EvalJob.objects.all(), older_than_seconds)
    for job_id in stale:
        announce(job_id)
    return stale


def fail_queued(job_id: int, error: str) -> bool:
    """A queued job that cannot run (its task could not be sent, it names an unknown task)."""
    failed = EVAL_STATES.fail_queued(EvalJob.objects.filter(pk=job_id), error)
    if failed:
        announce(job_id)
    return failed


def cancel_queued(job_id: int) -> bool:
    """Cancel a job that no worker has claimed yet; False once one has (its runner stops it)."""
    cancelled = EVAL_STATES.cancel_queued(EvalJob.objects.filter(pk=job_id))
    if cancelled:
        announce(job_id)
    return cancelled


def jobs_to_resend(after: dt.timedelta) -> list[int]:
    """Queued jobs whose task message may be lost (see ``webapp.requeue``); marks them re-sent."""
    return requeue.due_for_resend(EvalJob.objects.filter(status=EvalStatus.QUEUED), after)
