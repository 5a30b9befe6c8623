"""CPU, memory and GPU use of every rank, gathered to rank 0 for the run's ``system/`` panel.

Each rank samples its own process and machine (and its GPU through NVML, from the
``nvidia-ml-py`` package, when it is installed and the rank runs on CUDA); at a logging step
all ranks exchange their samples in one all-gather of a few floats, and rank 0 writes them
as ``system/<metric>/rank<N>``: a straggling or overheating rank is a line apart from the
others. The exchange is a collective, so every rank must call :meth:`SystemMetrics.collect`
at the same steps (the trainer's logging steps, which all ranks reach); whether rank 0
writes is decided by its clock alone (``train.system_metrics_every_s``), which never
desynchronises the ranks.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any

import torch
import torch.distributed as dist

# The order of the gathered vector; a metric a rank cannot read is NaN there and left out.
METRICS = (
    "cpu_util",  # the rank's process, in cores busy (2.0: two cores' worth)
    "ram_gb",  # the rank's process, resident memory
    "host_cpu_util",  # the whole machine, 0..1
    "host_ram_used_gb",  # the whole machine
    "gpu_util",  # the rank's GPU, 0..1 (NVML)
    "gpu_mem_gb",  # the rank's GPU, memory in use by every process on it
    "gpu_power_w",  # NVML
    "gpu_temp_c",  # NVML
)


def _nvml_handle(device: torch.device) -> Any | None:
    """The NVML handle of ``device``'s GPU, or None without CUDA or without nvidia-ml-py."""
    if device.type != "cuda":
        return None
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        # By UUID, not index: CUDA_VISIBLE_DEVICES renumbers the devices CUDA sees, NVML does not.
        uuid = str(torch.cuda.get_device_properties(device).uuid)
        return pynvml.nvmlDeviceGetHandleByUUID(uuid if uuid.startswith("GPU-") else "GPU-" + uuid)
    except Exception:  # NVML missing from the driver, an old torch without .uuid: no GPU fields
        return None


def sample(device: torch.device, gpu: Any | None = None, proc: Any | None = None) -> dict[str, float]:
    """This rank's figures now; GPU fields only when ``gpu`` (an NVML handle) is given.

    ``proc`` is the psutil.Process to measure: CPU use is counted from its previous sample, so
    the caller keeps one (a fresh one reads 0 the first time).
    """
    import psutil

    proc = proc or psutil.Process()
    values = {
        "cpu_util": proc.cpu_percent() / 100,  # since the previous call in this process
        "ram_gb": proc.memory_info().rss / 1e9,
        "host_cpu_util": psutil.cpu_percent() / 100,
        "host_ram_used_gb": psutil.virtual_memory().used / 1e9,
    }
    if gpu is not None:
        import pynvml

        readers = {
            "gpu_util": lambda: pynvml.nvmlDeviceGetUtilizationRates(gpu).gpu / 100,
            "gpu_mem_gb": lambda: pynvml.nvmlDeviceGetMemoryInfo(gpu).used / 1e9,
            "gpu_power_w": lambda: pynvml.nvmlDeviceGetPowerUsage(gpu) / 1000,
            "gpu_temp_c": lambda: float(pynvml.nvmlDeviceGetTemperature(gpu, pynvml.NVML_TEMPERATURE_GPU)),
        }
        for name, read in readers.items():
            with contextlib.suppress(pynvml.NVMLError):  # a field this GPU does not report
                values[name] = float(read())
    elif device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        values["gpu_mem_gb"] = (total - free) / 1e9
    return values


def event_values(per_rank: list[dict[str, float]]) -> dict[str, float]:
    """``[{metric: value}, ...]`` by rank as the event's ``{"system/<metric>/rank<N>": value}``."""
    return {
        f"system/{name}/rank{rank}": value
        for rank, values in enumerate(per_rank)
        for name, value in values.items()
        if value is not None and math.isfinite(value)
    }


class SystemMetrics:
    """Samples this rank and, every ``every_s`` seconds of rank 0's clock, hands rank 0 all ranks'."""

    def __init__(self, every_s: float, device: torch.device, rank: int, world: int, clock=time.monotonic):
        self.every_s, self.device, self.rank, self.world = every_s, device, rank, world
        self.clock = clock
        import psutil

        self.gpu = _nvml_handle(device)
        self.proc = psutil.Process()
        self.last: float | None = None
        sample(device, self.gpu, self.proc)  # starts the CPU counters: each sample then covers an interval

    def collect(self) -> dict[str, float] | None:
        """Call on every rank at the same steps. Rank 0 gets the event's values when one is due, else None."""
        if self.every_s <= 0:
            return None
        mine = sample(self.device, self.gpu, self.proc)
        vector = torch.tensor([mine.get(name, math.nan) for name in METRICS], dtype=torch.float64)
        if self.world > 1 and dist.is_available() and dist.is_initialized():
            # NCCL moves CUDA tensors only; gloo, CPU ones.
            on = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
            vector = vector.to(on)
            parts = [torch.empty_like(vector) for _ in range(self.world)]
            dist.all_gather(parts, vector)
            rows = [p.cpu().tolist() for p in parts]
        else:
            rows = [vector.tolist()]
        if self.rank != 0:
            return None
        now = self.clock()
        if self.last is not None and now - self.last < self.every_s:
            return None
        self.last = now
        return event_values([dict(zip(METRICS, row, strict=True)) for row in rows])
