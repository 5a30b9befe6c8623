"""The web's one way to start work on a worker: a Celery task sent by its name, after commit.

Dependencies run one way, ``modelcore ← webapp ← workers`` (DESIGN.md): the web never
imports ``workers``, it names the task and the worker that consumes the queue runs it.
``app`` is the one Celery app of the project, configured from the ``CELERY_*`` settings;
``workers`` adds what only a worker needs (beat, prefetch) to this same app.

Tasks take ids and re-read the row, so a task is sent only once its row is committed
(``send_on_commit``). A broker that refuses the message must not leave the job queued
forever: ``on_failure`` gets the job's id and the reason, and marks the job failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from celery import Celery
from django.conf import settings
from django.db import transaction

log = logging.getLogger(__name__)

# The names the workers register (``workers.tasks``, ``workers.eval_jobs``); renaming one breaks queued messages.
LAUNCH_RUN = "workers.tasks.launch_run"
RUN_EVAL_JOB = "workers.eval_jobs.run_eval_job"
RUN_SAMPLE_JOB = "workers.sample_jobs.run_sample_job"  # sampling from or exporting a checkpoint
NOTIFY_ALERT = "workers.alerts.notify_alert"  # an alert's webhook (webapp.alerts)
SCHEDULE_RUNS = "workers.scheduler.schedule_runs"  # the fleet scheduler (RUNWRIGHT_FLEET)

app = Celery("runwright")
app.config_from_object("django.conf:settings", namespace="CELERY")

OnFailure = Callable[[int, str], object]


def queue_for(task_name: str) -> str | None:
    """The queue a task goes to; None is the default queue every worker consumes."""
    if task_name == SCHEDULE_RUNS:
        return getattr(settings, "SCHEDULER_QUEUE", None) or None
    if task_name in (RUN_EVAL_JOB, RUN_SAMPLE_JOB):
        # A dedicated queue lets eval jobs (and sampling, export: short jobs on a checkpoint
        # too) run beside training on workers whose slots supervise runs.
        return getattr(settings, "EVAL_QUEUE", None) or None
    return None


def send(task_name: str, job_id: int, *, on_failure: OnFailure) -> None:
    """Send ``task_name(job_id)`` now; a broker failure is passed to ``on_failure`` (never raised).

    With the fleet on, a run's launch goes to the scheduler, which sends it on to the queue
    of the host it places the run on (``workers.scheduler``).
    """
    if task_name == LAUNCH_RUN and getattr(settings, "FLEET_ENABLED", False):
        task_name = SCHEDULE_RUNS
    queue = queue_for(task_name)
    try:
        app.send_task(task_name, (job_id,), **({"queue": queue} if queue else {}))
    except Exception as exc:
        log.exception("could not send %s(%s)", task_name, job_id)
        on_failure(job_id, str(exc))


def send_on_commit(task_name: str, job_id: int, *, on_failure: OnFailure) -> None:
    """``send`` once the current transaction commits (at once outside one), so the worker finds the row."""
    transaction.on_commit(lambda: send(task_name, job_id, on_failure=on_failure))
