"""Starting a worker: reap what an earlier life of it left running, take back its Slurm jobs.

A worker killed with SIGKILL (OOM killer, ``docker kill``) takes its supervisors with it
(Celery's pool processes die with the main process), and their trainers die with them
(``modelcore.parent_death``). Whatever escaped that (a rank that had not yet set its
parent-death signal) is killed here, so the GPUs the new worker leases are really free.

A run on Slurm (``RUNWRIGHT_LAUNCHER=slurm``) is the exception: its job is the cluster's and
trains on, so once the worker is ready it sends itself a task per such run that watches the
job again (``workers.slurm_reattach``).
"""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import worker_init, worker_ready
from django.conf import settings

from workers import job_processes, slurm_reattach

log = logging.getLogger(__name__)


@worker_init.connect
def reap_orphaned_jobs(**kwargs) -> None:
    reaped = job_processes.reap_orphans()
    if reaped:
        log.warning("killed the processes of %d job(s) left by a dead supervisor: %s", len(reaped), reaped)


@worker_ready.connect
def reattach_slurm_jobs(sender: Any = None, **kwargs: Any) -> None:
    if settings.LAUNCHER != "slurm":
        return
    # Any worker may watch a Slurm job (the run directories are on the cluster's shared
    # filesystem): the first queue this one consumes is as good as another.
    queues = [queue.name for queue in sender.task_consumer.queues]
    try:
        sent = slurm_reattach.send_reattachments(sender.hostname, queues[0])
    except Exception:
        # A worker that cannot reach the database or broker now still starts; the beat's
        # lost-run recovery then resubmits the runs it would have taken back.
        log.exception("could not look for Slurm jobs to take back")
        return
    if sent:
        log.warning("taking back the Slurm jobs of runs %s, left by this worker's earlier life", sent)
