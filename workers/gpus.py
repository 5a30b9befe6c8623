"""Which GPUs of this host a run may use: an inventory, and leases that die with their holder.

A worker host with 8 GPUs and a Celery concurrency of 2 can supervise two runs at once;
without leases both would start on all 8 GPUs and the second would run out of memory.
So before a run is claimed, its supervisor process leases ``parallel.num_processes``
GPUs: one ``flock`` per GPU on a file in ``lock_dir()``. The kernel releases a flock
when its holder exits, however it exits, so a killed worker never leaves GPUs leased.
The trainer gets the leased GPUs as ``CUDA_VISIBLE_DEVICES``.

The inventory is ``RUNWRIGHT_GPUS`` (comma-separated ids; empty means none) when set,
else this process's ``CUDA_VISIBLE_DEVICES``, else what ``nvidia-smi`` lists.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings

from modelcore.config import RunConfig
from modelcore.launch import visible_gpu_ids


class GpusBusy(Exception):
    """Fewer GPUs are free on this host than the run needs; try again later."""


def host_gpus() -> list[str]:
    """The ids of the GPUs this worker may hand out, without importing torch."""
    configured = os.environ.get("RUNWRIGHT_GPUS")
    if configured is not None:
        return [d.strip() for d in configured.split(",") if d.strip() and d.strip() != "-1"]
    return visible_gpu_ids()


def gpus_needed(config: RunConfig, available: list[str]) -> int:
    """How many GPUs the run takes on this host: none for CPU runs or a host without GPUs."""
    if config.parallel.device == "cpu" or not available:
        return 0
    return config.parallel.num_processes


def lock_dir() -> Path:
    """One folder of lock files per host (the data directory may be shared between hosts)."""
    configured = os.environ.get("RUNWRIGHT_GPU_LOCK_DIR")
    return Path(configured) if configured else Path(settings.DATA_DIR) / "gpu-leases" / socket.gethostname()


@contextlib.contextmanager
def lease(count: int, gpus: list[str] | None = None, directory: Path | None = None) -> Iterator[list[str]]:
    """Hold ``count`` of ``gpus`` (default: the host's) for the block; yields their ids.

    Raises GpusBusy, holding nothing, when fewer than ``count`` are free. ``count`` 0
    yields [] without touching any file.
    """
    if count == 0:
        yield []
        return
    gpus = host_gpus() if gpus is None else gpus
    if count > len(gpus):
        # The launcher names the field; a lease could never be granted.
        raise ValueError(
            f"parallel.num_processes: {count} GPUs asked for but this host has {len(gpus)}; "
            "lower it or send the run to a bigger host"
        )
    directory = lock_dir() if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    held: list[tuple[str, int]] = []
    try:
        for gpu in gpus:
            if len(held) == count:
                break
            fd = os.open(directory / f"gpu-{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            held.append((gpu, fd))
        if len(held) < count:
            raise GpusBusy(
                f"{count} GPU(s) needed, {len(held)} of {len(gpus)} free on {socket.gethostname()}"
            )
        yield [gpu for gpu, _ in held]
    finally:
        for _, fd in held:
            os.close(fd)  # closing the only descriptor releases the flock
