"""A worker's place in the fleet: it registers its host and beats while it lives (``RUNWRIGHT_FLEET``).

On ``worker_ready`` the worker registers under its Celery node name with a queue only it
consumes (``RUNWRIGHT_FLEET_QUEUE``, default ``host.<node name>``, added to what it
consumes), its GPUs and its CPU slots; then a thread of the main process beats every
``FLEET_HEARTBEAT_SECONDS`` with one utilisation sample. The thread lives in the main
process, not a pool process busy supervising a run, so a host beats while it trains and
goes silent when the worker dies, however it dies.

The GPUs are those the leases hand out (``workers.gpus.host_gpus``). Their model, memory,
utilisation and power come from NVML (the ``nvidia-ml-py`` package) when it is importable
and sees them; otherwise from the declared inventory ``RUNWRIGHT_GPU_MODEL`` and
``RUNWRIGHT_GPU_MEMORY_MB`` (what tests and hosts without NVML use), with no utilisation.
CPU slots are ``RUNWRIGHT_CPU_SLOTS``, else the settings' ``MAX_CPU_PROCESSES``.

The address it registers is where the other hosts of a multi-node run reach this one when
it is their first node (the rendezvous): ``RUNWRIGHT_FLEET_ADDRESS``, else the machine's
fully qualified name.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from typing import Any

from celery.signals import worker_ready, worker_shutting_down
from django.conf import settings
from django.db import close_old_connections

from webapp.fleet import services
from webapp.fleet.services import GpuInfo
from webapp.fleet.stream import announce_fleet_change
from workers import gpus, job_processes

log = logging.getLogger(__name__)

_stop = threading.Event()
_state: dict[str, Any] = {}


def _nvml() -> Any | None:
    try:
        import pynvml

        pynvml.nvmlInit()
        return pynvml
    except Exception:  # not installed, no driver: the declared inventory is used
        return None


def inventory() -> list[GpuInfo]:
    """This host's GPUs as the leases know them, described by NVML or the declared inventory."""
    ids = gpus.host_gpus()
    nvml = _nvml()
    found = []
    for gpu_id in ids:
        model, memory = (
            os.environ.get("RUNWRIGHT_GPU_MODEL", ""),
            int(os.environ.get("RUNWRIGHT_GPU_MEMORY_MB", 0) or 0),
        )
        if nvml is not None:
            with contextlib.suppress(Exception):
                handle = nvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
                name = nvml.nvmlDeviceGetName(handle)
                model = name.decode() if isinstance(name, bytes) else str(name)
                memory = nvml.nvmlDeviceGetMemoryInfo(handle).total // (1024 * 1024)
        found.append(GpuInfo(index=gpu_id, model=model, memory_mb=memory))
    return found


def utilisation(gpu_ids: list[str]) -> dict[str, Any]:
    """One sample: per-GPU utilisation (0..1), memory in use and power through NVML; CPU load otherwise."""
    nvml = _nvml() if gpu_ids else None
    if nvml is not None:
        util, mem, power = [], [], []
        for gpu_id in gpu_ids:
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(int(gpu_id))
                util.append(nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100)
                mem.append(nvml.nvmlDeviceGetMemoryInfo(handle).used // (1024 * 1024))
                power.append(round(nvml.nvmlDeviceGetPowerUsage(handle) / 1000, 1))
            except Exception:
                util.append(None)
                mem.append(None)
                power.append(None)
        return {"util": util, "mem_mb": mem, "power_w": power}
    load = os.getloadavg()[0] / (os.cpu_count() or 1)
    return {"cpu": round(min(load, 1.0), 3)}


def lease_holders(gpu_ids: list[str]) -> dict[str, int | None]:
    """GPU id → the run whose job holds its lease now (read from the lock files, see ``workers.gpus``)."""
    found: dict[str, int | None] = {}
    folder = gpus.lock_dir()
    for gpu_id in gpu_ids:
        try:
            tag = (folder / f"gpu-{gpu_id}.lock").read_text(encoding="ascii", errors="replace").strip()
        except OSError:
            tag = ""
        kind, _, rest = tag.partition("-")
        run_id = rest.split("-")[0]
        alive = kind == "run" and run_id.isdigit() and job_processes.tagged_processes(tag)
        found[gpu_id] = int(run_id) if alive else None
    return found


def cpu_slots() -> int:
    configured = os.environ.get("RUNWRIGHT_CPU_SLOTS")
    return int(configured) if configured else int(settings.MAX_CPU_PROCESSES)


def register(name: str, queue: str) -> list[str]:
    """Register this host; returns the GPU ids it declared."""
    found = inventory()
    address = os.environ.get("RUNWRIGHT_FLEET_ADDRESS") or socket.getfqdn()
    services.register_host(name=name, queue=queue, address=address, cpu_slots=cpu_slots(), gpus=found)
    return [g.index for g in found]


def _beat_forever(name: str, gpu_ids: list[str], every: float) -> None:
    while not _stop.wait(every):
        try:
            close_old_connections()
            services.beat_host(name, utilisation(gpu_ids), lease_holders(gpu_ids))
            announce_fleet_change(name)  # the Fleet page's stream reads the new beat and leases
        except Exception:
            log.exception("fleet heartbeat of %s failed; trying again in %s s", name, every)


@worker_ready.connect
def join_fleet(sender: Any = None, **kwargs: Any) -> None:
    if not settings.FLEET_ENABLED:
        return
    name = sender.hostname
    queue = os.environ.get("RUNWRIGHT_FLEET_QUEUE") or f"host.{name}"
    if queue not in {q.name for q in sender.task_consumer.queues}:
        sender.add_task_queue(queue)
    gpu_ids = register(name, queue)
    announce_fleet_change(name)
    _state["name"] = name
    _stop.clear()
    thread = threading.Thread(
        target=_beat_forever, args=(name, gpu_ids, float(settings.FLEET_HEARTBEAT_SECONDS)), daemon=True
    )
    thread.start()
    log.info("joined the fleet as %s on queue %s with GPUs %s", name, queue, gpu_ids or "none")


@worker_shutting_down.connect
def leave_fleet(**kwargs: Any) -> None:
    name = _state.pop("name", None)
    if name is None:
        return
    _stop.set()
    with contextlib.suppress(Exception):
        close_old_connections()
        services.host_gone(name)
        announce_fleet_change(name)
