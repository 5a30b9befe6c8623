"""Dying with the parent process (Linux ``PR_SET_PDEATHSIG``), for trainers started by a worker.

A worker's supervisor starts the launcher in a session of its own, so that a cancel can
signal it as a group; ``accelerate launch`` (torch elastic) then starts each rank in a
session of its own again. Nothing ties these processes to the worker: a supervisor killed
with SIGKILL (the OOM killer, Celery's hard time limit) would leave them training on GPUs
that its lease no longer protects. With the parent-death signal set, the kernel sends
SIGKILL to a process when the thread that forked it dies, so the chain
supervisor -> launcher -> ranks unwinds by itself.

The worker sets it on the launcher (``preexec``) and asks the ranks to set it on
themselves through ``DIE_WITH_PARENT_ENV`` (``modelcore.train`` reads it first thing).
Used by hand, the trainer is left alone. Imports no torch.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys
from collections.abc import Callable

DIE_WITH_PARENT_ENV = "RUNWRIGHT_DIE_WITH_PARENT"
_PR_SET_PDEATHSIG = 1


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    return libc.prctl


def die_with_parent_preexec() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGKILL when this thread dies.

    Built before the fork (library lookup allocates; the forked child only makes the
    call). The child also checks that its parent is still the one that forked it: a
    parent that died before the ``prctl`` would otherwise never be noticed. None where
    the platform has no parent-death signal.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)

    return preexec


def die_with_parent_if_asked() -> bool:
    """In a rank: set the parent-death signal when the worker asked for it; returns whether it did."""
    if os.environ.get(DIE_WITH_PARENT_ENV) != "1":
        return False
    prctl = _prctl()
    if prctl is None:
        return False
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # The launcher may have died before this line; init (or a subreaper) is our parent then.
    if os.getppid() == 1:
        os._exit(137)
    return True
