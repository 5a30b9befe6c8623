"""Runwright's Celery app: ``celery -A workers worker`` and ``celery -A workers beat``.

Tasks live in ``workers.tasks``; the training supervisor in ``workers.supervisor``.
Settings come from Django's (``CELERY_*``), which read the environment only.
"""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "webapp.settings")

import django  # noqa: E402
from django.apps import apps  # noqa: E402
from django.conf import settings  # noqa: E402

# The worker and beat import this package first and need the ORM; tests import
# it with Django already set up (the web never does: it sends by task name).
if not apps.ready and not apps.loading:
    django.setup()

# The web's app (it sends tasks by name and never imports this package); the worker adds its own settings.
from webapp.enqueue import app  # noqa: E402

app.conf.update(
    # A launch task holds its worker slot for the whole run: a worker must not
    # reserve queued runs that an idle worker elsewhere could start now (see workers.tasks).
    worker_prefetch_multiplier=1,
    broker_connection_retry_on_startup=True,
)
app.conf.imports = (
    "workers.eval_jobs",
    "workers.alerts",
    "workers.scheduler",
    "workers.sample_jobs",
)  # task modules besides workers.tasks


def _every(seconds: float, task: str, **options: object) -> dict[str, object]:
    """A beat entry: ``task`` every ``seconds``. A send that waited behind busy workers until
    the next one is due expires: the next does the same work, so they never pile up."""
    return {"task": task, "schedule": seconds, "options": {"expires": seconds - 1.0, **options}}


app.conf.beat_schedule = {
    # Jobs whose worker went silent (killed or lost) are failed or marked lost.
    "sweep-lost-runs": _every(15.0, "workers.tasks.sweep_lost_runs"),
    "sweep-stale-eval-jobs": _every(15.0, "workers.eval_jobs.sweep_stale_eval_jobs"),
    "sweep-stale-sample-jobs": _every(15.0, "workers.sample_jobs.sweep_stale_sample_jobs"),
    # Jobs whose broker message was lost would stay queued forever (webapp.requeue).
    "resend-queued-runs": _every(60.0, "workers.tasks.resend_queued_runs"),
    "resend-queued-eval-jobs": _every(60.0, "workers.eval_jobs.resend_queued_eval_jobs"),
    "resend-queued-sample-jobs": _every(60.0, "workers.sample_jobs.resend_queued_sample_jobs"),
    # Sweeps whose run_changed trigger was lost with a dying worker advance anyway (idempotent).
    "advance-sweeps": _every(30.0, "workers.tasks.advance_sweeps"),
    # The fleet's scheduling pass (RUNWRIGHT_FLEET): hosts that went silent, runs that ended, the queue.
    "schedule-runs": _every(
        10.0,
        "workers.scheduler.schedule_runs",
        **({"queue": settings.SCHEDULER_QUEUE} if settings.SCHEDULER_QUEUE else {}),
    ),
}
app.autodiscover_tasks(["workers"])

from workers import fleet, shutdown, startup  # noqa: E402,F401  (connect the worker start and shutdown handlers)

__all__ = ["app"]
