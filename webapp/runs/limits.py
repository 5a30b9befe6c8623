"""Compute one run may ask for: CPU ranks are capped so that no member can exhaust a worker.

GPU runs are bounded by the GPUs a worker leases (``workers.gpus``); a run whose
ranks are CPU processes has no such bound, so ``MAX_CPU_PROCESSES``
(``RUNWRIGHT_MAX_CPU_PROCESSES``, default the host's cores) caps it at submit time.
The worker refuses the same runs before launch (``modelcore.launch``).
"""

from __future__ import annotations

from django.conf import settings

from modelcore.config import RunConfig
from modelcore.launch import visible_gpu_ids


def runs_on_cpu(config: RunConfig) -> bool:
    """Whether the run's ranks would be CPU processes, as ``modelcore.launch`` decides it.

    ``auto`` means GPUs where the worker has them. The web sees its own host only: the
    embedded shape runs the worker there; on a team server whose web host has no GPU,
    an ``auto`` run is capped as a CPU run, which the operator sizes with the setting.
    """
    device = config.parallel.device
    return device == "cpu" or (device == "auto" and not visible_gpu_ids())


def compute_errors(config: RunConfig) -> dict[str, str]:
    """Field errors for a run that asks for more than one member may take."""
    limit = settings.MAX_CPU_PROCESSES
    n = config.parallel.num_processes
    nodes = config.launcher.nodes if settings.FLEET_ENABLED else 1
    if nodes > 1:
        # The fleet spreads the ranks over launcher.nodes hosts: each host's share is what is capped.
        limit *= nodes
    if runs_on_cpu(config) and n > limit:
        if nodes > 1:
            return {
                "parallel.num_processes": (
                    f"must be at most {limit} for a run on CPU processes over {nodes} hosts (each "
                    f"host's RUNWRIGHT_MAX_CPU_PROCESSES, {limit // nodes}, per node; got {n}); "
                    "lower it, or run on GPUs"
                )
            }
        return {
            "parallel.num_processes": (
                f"must be at most {limit} for a run on CPU processes (this server's "
                f"RUNWRIGHT_MAX_CPU_PROCESSES; got {n}); lower it, or run on GPUs"
            )
        }
    return {}
