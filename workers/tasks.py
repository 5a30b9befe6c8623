"""Celery tasks. They take ids, re-read the database and are safe to run twice.

Time limits: every task has one. ``launch_run`` supervises a training run for
as long as it trains (days, for a large model), so its soft limit is long
(``RUN_TIME_LIMIT_SECONDS``). When it fires, Celery raises
``SoftTimeLimitExceeded`` inside the supervisor, which stops the trainer the
way a cancel does (SIGTERM to the ranks, which checkpoint, then SIGKILL after
``train.cancel_grace_s``) and marks the run failed with a resume hint; the hard
limit comes a grace period later (longer than the longest cancel grace) so that
this clean stop always has time to finish. The limits need Celery's default
prefork pool (signals). Should the hard limit kill the supervisor anyway, its
trainer dies with it (``modelcore.parent_death``).

``launch_run`` acknowledges late: with a prefetch of one (``workers.app``) a
worker busy supervising a run then reserves no other message, so a queued run
goes to a free worker instead of waiting days behind a busy one. A redelivery
(worker lost; Redis's visibility timeout on a long run) is harmless: the claim
finds the run no longer queued and does nothing.

On a GPU host the run first leases its GPUs (``workers.gpus``) and holds them while it
trains; when too few are free it stays queued and the task retries after
``GPU_RETRY_SECONDS``, so runs on one host never share a GPU. Before leasing, the
worker kills what dead supervisors on this host left running (``workers.job_processes``).

A launch message can be lost (a broker restarted without persistence): beat runs
``resend_queued_runs`` every minute, which sends again the runs queued for longer than
``REQUEUE_AFTER_SECONDS`` (``webapp.requeue``); the claim makes the duplicate harmless.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import socket
from collections.abc import Callable
from typing import Any

from celery import shared_task
from django.conf import settings

from modelcore.config import ConfigError, RunConfig
from modelcore.launch import processes_per_node
from webapp.runs import transitions
from webapp.runs.services import enqueue_launch
from webapp.sweeps.services import advance_running_sweeps
from workers import (
    first_node,
    gpus,
    job_processes,
    node_share,  # noqa: F401  (registers launch_node_share with the worker)
    scheduler,
    supervisor,
    sweep,
)

log = logging.getLogger(__name__)

RUN_TIME_LIMIT_SECONDS = 30 * 24 * 3600
# Between the soft and the hard limit: the trainer's checkpoint after SIGTERM, then the final status.
STOP_GRACE_SECONDS = int(supervisor.MAX_CANCEL_GRACE_SECONDS) + 120
SWEEP_TIME_LIMIT_SECONDS = 60
GPU_RETRY_SECONDS = 30


def _beat_task(name: str) -> Callable[[Callable[..., Any]], Any]:
    """A task that beat sends on a schedule: no result kept, and a time limit, so one stuck on the
    database ends (and the next beat tries again) instead of holding a worker."""
    return shared_task(
        name=name,
        ignore_result=True,
        soft_time_limit=SWEEP_TIME_LIMIT_SECONDS // 2,
        time_limit=SWEEP_TIME_LIMIT_SECONDS,
    )


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
    queued = transitions.queued_config(run_id)
    if queued is None:
        log.info("run %s is not queued (already claimed, cancelled or deleted); nothing to do", run_id)
        return None
    if settings.FLEET_ENABLED and not scheduler.placed_here(run_id, worker):
        log.info("run %s is not placed on %s (placed elsewhere or not yet); nothing to do", run_id, worker)
        return None
    job_processes.reap_orphans()
    tag = job_processes.new_tag("run", run_id)
    try:
        with gpus.lease(_gpus_to_lease(queued), holder=tag) as gpu_ids:
            run = transitions.claim_for_launch(run_id, worker)
            if run is None:
                log.info("run %s was claimed or cancelled meanwhile; nothing to do", run_id)
                return None
            command = functools.partial(supervisor.default_command, gpu_ids=gpu_ids)
            if _multi_node(queued):  # node rank 0 of a multi-node run (workers.first_node)
                command = functools.partial(
                    first_node.command, run_id=run.id, attempt=run.attempt, gpu_ids=gpu_ids
                )
            try:
                return supervisor.supervise(run, command=command, process_tag=tag)
            finally:
                if settings.FLEET_ENABLED:
                    _schedule_after_run(run_id)
    except gpus.GpusBusy as exc:
        log.info("run %s waits for GPUs: %s; retrying in %s s", run_id, exc, GPU_RETRY_SECONDS)
        transitions.waiting_for_gpus(run_id)  # its message lives on: no re-send needed
        raise self.retry(countdown=GPU_RETRY_SECONDS, max_retries=None) from exc


def _schedule_after_run(run_id: int) -> None:
    """The run's GPUs are free again: a scheduling pass now, not at the next beat."""
    try:
        scheduler.schedule()
    except Exception:
        log.exception("scheduling pass after run %s failed; beat runs the next one", run_id)


def _multi_node(config: dict) -> bool:
    try:
        return first_node.multi_node(RunConfig.from_dict(config))
    except ConfigError:
        return False


def _gpus_to_lease(config: dict) -> int:
    """GPUs to lease for a stored config; 0 where the launcher will refuse it with a clear error."""
    if settings.LAUNCHER == "slurm":
        return 0  # Slurm allocates the job's GPUs on its nodes; this host's are not the run's
    try:
        parsed = RunConfig.from_dict(config)
    except ConfigError:
        return 0  # the supervisor fails the run, naming the field
    available = gpus.host_gpus()
    needed = gpus.gpus_needed(parsed, available)
    if needed and first_node.multi_node(parsed):
        needed = processes_per_node(parsed)  # this host's share of the ranks
    return needed if needed <= len(available) else 0


@_beat_task("workers.tasks.sweep_lost_runs")
def sweep_lost_runs() -> list[int]:
    """Mark runs whose heartbeat is older than ``LOST_AFTER_SECONDS`` as lost."""
    return sweep.sweep_lost_runs()


@_beat_task("workers.tasks.resend_queued_runs")
def resend_queued_runs() -> list[int]:
    """Send the launch of runs queued for longer than ``REQUEUE_AFTER_SECONDS`` again."""
    due = transitions.runs_to_resend(dt.timedelta(seconds=settings.REQUEUE_AFTER_SECONDS))
    for run_id in due:
        log.warning("run %s is still queued; sending its launch again (the message may be lost)", run_id)
        enqueue_launch(run_id)
    return due


@_beat_task("workers.tasks.advance_sweeps")
def advance_sweeps() -> list[int]:
    """Advance every running sweep: the catch-up for a ``run_changed`` lost with its worker."""
    return advance_running_sweeps()
