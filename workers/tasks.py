"""Celery tasks. They take ids, re-read the database and are safe to run twice.

Time limits: every task has one. ``launch_run`` supervises a training run for
as long as it trains (days, for a large model), so its soft limit is long
(``RUN_TIME_LIMIT_SECONDS``). When it fires, Celery raises
``SoftTimeLimitExceeded`` inside the supervisor, which stops the trainer the
way a cancel does (SIGTERM to the group, which checkpoints, then SIGKILL after
``KILL_AFTER_SECONDS``) and marks the run failed with a resume hint; the hard
limit comes a grace period later so that this clean stop always has time to
finish. The limits need Celery's default prefork pool (signals).

``launch_run`` acknowledges late: with a prefetch of one (``workers.app``) a
worker busy supervising a run then reserves no other message, so a queued run
goes to a free worker instead of waiting days behind a busy one. A redelivery
(worker lost; Redis's visibility timeout on a long run) is harmless: the claim
finds the run no longer queued and does nothing.
"""

from __future__ import annotations

import logging
import socket

from celery import shared_task

from webapp.runs import transitions
from workers import supervisor, sweep

log = logging.getLogger(__name__)

RUN_TIME_LIMIT_SECONDS = 30 * 24 * 3600
STOP_GRACE_SECONDS = 120
SWEEP_TIME_LIMIT_SECONDS = 60


@shared_task(
    bind=True,
    name="workers.tasks.launch_run",
    ignore_result=True,
    acks_late=True,
    soft_time_limit=RUN_TIME_LIMIT_SECONDS,
    time_limit=RUN_TIME_LIMIT_SECONDS + STOP_GRACE_SECONDS,
)
def launch_run(self, run_id: int) -> str | None:
    """Claim the queued run and supervise its training to the end; a run not queued is left alone."""
    worker = self.request.hostname or socket.gethostname()
    run = transitions.claim_for_launch(run_id, worker)
    if run is None:
        log.info("run %s is not queued (already claimed, cancelled or deleted); nothing to do", run_id)
        return None
    return supervisor.supervise(run)


@shared_task(
    name="workers.tasks.sweep_lost_runs",
    ignore_result=True,
    soft_time_limit=SWEEP_TIME_LIMIT_SECONDS // 2,
    time_limit=SWEEP_TIME_LIMIT_SECONDS,
)
def sweep_lost_runs() -> list[int]:
    """Mark runs whose heartbeat is older than ``LOST_AFTER_SECONDS`` as lost."""
    return sweep.sweep_lost_runs()
