"""Starting a worker reaps what an earlier life of it left running, before it takes any task.

A worker killed with SIGKILL (OOM killer, ``docker kill``) takes its supervisors with it
(Celery's pool processes die with the main process), and their trainers die with them
(``modelcore.parent_death``). Whatever escaped that (a rank that had not yet set its
parent-death signal) is killed here, so the GPUs the new worker leases are really free.
"""

from __future__ import annotations

import logging

from celery.signals import worker_init

from workers import job_processes

log = logging.getLogger(__name__)


@worker_init.connect
def reap_orphaned_jobs(**kwargs) -> None:
    reaped = job_processes.reap_orphans()
    if reaped:
        log.warning("killed the processes of %d job(s) left by a dead supervisor: %s", len(reaped), reaped)
