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
    beat_schedule={
        "sweep-lost-runs": {
            "task": "workers.tasks.sweep_lost_runs",
            "schedule": 15.0,
            # Sweeps that waited behind busy workers are stale: the next one is due anyway.
            "options": {"expires": 14.0},
        },
    },
)
app.conf.imports = (
    "workers.eval_jobs",
    "workers.alerts",
    "workers.scheduler",
    "workers.sample_jobs",
)  # task modules besides workers.tasks
app.conf.beat_schedule["sweep-stale-eval-jobs"] = {
    "task": "workers.eval_jobs.sweep_stale_eval_jobs",
    "schedule": 15.0,
    "options": {"expires": 14.0},
}
app.conf.beat_schedule["sweep-stale-sample-jobs"] = {
    "task": "workers.sample_jobs.sweep_stale_sample_jobs",
    "schedule": 15.0,
    "options": {"expires": 14.0},
}
# Runs and eval jobs whose broker message was lost would stay queued forever (webapp.requeue).
app.conf.beat_schedule["resend-queued-runs"] = {
    "task": "workers.tasks.resend_queued_runs",
    "schedule": 60.0,
    "options": {"expires": 59.0},
}
app.conf.beat_schedule["resend-queued-eval-jobs"] = {
    "task": "workers.eval_jobs.resend_queued_eval_jobs",
    "schedule": 60.0,
    "options": {"expires": 59.0},
}
app.conf.beat_schedule["resend-queued-sample-jobs"] = {
    "task": "workers.sample_jobs.resend_queued_sample_jobs",
    "schedule": 60.0,
    "options": {"expires": 59.0},
}
# Sweeps whose run_changed trigger was lost with a dying worker advance anyway (idempotent).
app.conf.beat_schedule["advance-sweeps"] = {
    "task": "workers.tasks.advance_sweeps",
    "schedule": 30.0,
    "options": {"expires": 29.0},
}
# The fleet's scheduling pass (RUNWRIGHT_FLEET): hosts that went silent, runs that ended, the queue.
app.conf.beat_schedule["schedule-runs"] = {
    "task": "workers.scheduler.schedule_runs",
    "schedule": 10.0,
    "options": {"expires": 9.0, **({"queue": settings.SCHEDULER_QUEUE} if settings.SCHEDULER_QUEUE else {})},
}
app.autodiscover_tasks(["workers"])

from workers import fleet, shutdown, startup  # noqa: E402,F401  (connect the worker start and shutdown handlers)

__all__ = ["app"]
