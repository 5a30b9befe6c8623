"""Every status change of an eval job, and the worker side's other writes to it.

The shared writes (claim, heartbeat, finish, cancel, the sweep of silent workers, the re-send
of lost messages) are ``webapp.process_jobs.ProcessJobRows``'s, on ``EVAL_STATES``. What is
this kind's own: its channel (``webapp.live.eval_channel``, forwarded by
``webapp.process_job_stream``), a claim resets the progress, each heartbeat stores the progress
bar, and a completed job stores its results; a periodic job's scores become its run's
``eval/<task>/<metric>`` metric points in the same transaction.
"""

from __future__ import annotations

import time
from typing import Any

from django.db import transaction

from webapp import enqueue, live
from webapp.evals.models import EVAL_STATES, EvalJob, EvalStatus
from webapp.evals.presenters import job_state
from webapp.metrics.services import Point, upsert_points
from webapp.process_jobs import ProcessJobRows

JOBS = ProcessJobRows(
    EvalJob,
    EVAL_STATES,
    noun="eval job",
    task=enqueue.RUN_EVAL_JOB,
    channel=live.eval_channel,
    state=job_state,
    claim_resets={"progress": 0.0},
    related=("run", "project"),
)


def record_progress(job_id: int, progress: float, current_task: str) -> bool:
    """Store progress and refresh the heartbeat; returns whether a cancel was requested."""
    return JOBS.heartbeat(job_id, progress=max(0.0, min(1.0, progress)), current_task=current_task[:200])


def finish(
    job_id: int,
    status: str,
    *,
    error: str = "",
    results: dict[str, Any] | None = None,
    has_samples: bool = False,
) -> bool:
    """Write the final state of a running job; for a periodic job, its scores become run metric points."""
    fields: dict[str, Any] = {}
    if status == EvalStatus.COMPLETED:
        fields.update(progress=1.0, results=results, has_samples=has_samples, current_task="")
    with transaction.atomic():
        done = JOBS.finish(job_id, status, error=error, **fields)
        if done and status == EvalStatus.COMPLETED:
            job = EvalJob.objects.get(pk=job_id)
            if job.periodic and job.run_id is not None and job.checkpoint_step is not None and results:
                upsert_points(job.run_id, eval_points(results, job.checkpoint_step))
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
