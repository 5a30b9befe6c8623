"""Which GPUs of this host a run may use: an inventory, and leases that die with their holder.

A worker host with 8 GPUs and a Celery concurrency of 2 can supervise two runs at once;
without leases both would start on all 8 GPUs and the second would run out of memory.
So before a run is claimed, its supervisor process leases ``parallel.num_processes``
GPUs: one ``flock`` per GPU on a file in ``lock_dir()``. The kernel releases a flock
when its holder exits, however it exits, so a killed worker never leaves GPUs leased.
The trainer gets the leased GPUs as ``CUDA_VISIBLE_DEVICES``.

The flock dies with the supervisor, but its trainer may outlive it by a moment (the
parent-death signal is asynchronous, and a process on a GPU takes a while to exit), or
for good where the signal failed. So the holder writes its job's tag
(``workers.job_processes``) into each lock file, and clears it when it lets go cleanly; a
later lease treats a GPU whose last holder's processes still live as taken, so a GPU is
free only once the trainer that used it is gone.

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
from workers.job_processes import tagged_processes


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
def lease(
    count: int, gpus: list[str] | None = None, directory: Path | None = None, *, holder: str = ""
) -> Iterator[list[str]]:
    """Hold ``count`` of ``gpus`` (default: the host's) for the block; yields their ids.

    ``holder``: the tag of the job that will use them, kept in the lock files while the
    lease lasts. Raises GpusBusy, holding nothing, when fewer than ``count`` are free.
    ``count`` 0 yields [] without touching any file.
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
            if tagged_processes(_read_holder(fd)):
                os.close(fd)  # its last holder died, its trainer not yet
                continue
            _write_holder(fd, holder)
            held.append((gpu, fd))
        if len(held) < count:
            raise GpusBusy(
                f"{count} GPU(s) needed, {len(held)} of {len(gpus)} free on {socket.gethostname()}"
            )
        yield [gpu for gpu, _ in held]
    finally:
        for _, fd in held:
            # Only reached once our own trainer is gone (the supervisor reaps it first).
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            os.close(fd)  # closing the only descriptor releases the flock


def _read_holder(fd: int) -> str:
    return os.pread(fd, 200, 0).decode("ascii", errors="replace").strip()


def _write_holder(fd: int, holder: str) -> None:
    os.ftruncate(fd, 0)
    if holder:
        os.pwrite(fd, holder.encode("ascii"), 0)
