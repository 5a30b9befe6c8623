"""Stopping a worker stops its trainers cleanly instead of waiting for them for days.

``docker stop``, ``systemctl stop`` and the demo's Ctrl-C send SIGTERM to the
Celery main process, whose warm shutdown waits for running tasks: a launch task
would hold it for as long as its run trains, until the service manager kills
everything without a checkpoint. So the main process forwards the signal to
its pool processes; a supervising one stops its trainer the way a cancel does
(checkpoint, then SIGKILL after a grace period), marks the run lost (it can be
resumed) and returns, and the warm shutdown completes.
"""

from __future__ import annotations

import logging
import signal

import psutil
from celery.signals import worker_shutting_down

log = logging.getLogger(__name__)


@worker_shutting_down.connect
def stop_supervised_runs(sig: str = "", how: str = "", exitcode: int = 0, **kwargs) -> None:
    if how != "Warm":
        return  # a cold shutdown terminates the pool itself
    for child in psutil.Process().children():
        try:
            child.send_signal(signal.SIGTERM)
        except psutil.Error:
            continue
    log.info("asked the pool processes to stop their trainers (%s)", sig)
