"""The command that starts a training run: ``accelerate launch ... -m modelcore.train``.

Imported by the workers, so it must not import torch. The caller runs the argv
as a list (never through a shell) in a new session. Torch elastic starts each
rank in a session of its own, so a cancel sends SIGTERM to the ranks themselves
(``workers.supervisor``): they stop at the next step, checkpoint, and rank 0
writes the ``cancelled`` status; the launcher exits with them.

One process runs ``python -m modelcore.train`` directly: Accelerate's
single-process launcher neither forwards signals nor waits for its child when
signalled, and adds nothing else. Several processes go through
``accelerate launch --multi_gpu`` (torch elastic), which waits for its ranks.
Without CUDA, ``ACCELERATE_USE_CPU=1`` makes those ranks CPU processes on gloo
(``accelerate launch --cpu`` would start only one process).

A share of a multi-node run (``launcher.nodes`` hosts of a fleet, ``node_command``) is one
``torchrun`` per host with the static rendezvous: ``--node-rank`` fixes which host holds
global rank 0 (the one that writes the events), and the first host's address and a port
it chose are the rendezvous every node dials.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from modelcore.config import RunConfig


def visible_gpu_ids() -> list[str]:
    """Ids of the GPUs this process may use, without importing torch: CUDA_VISIBLE_DEVICES, else nvidia-smi."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d.strip() for d in visible.split(",") if d.strip() and d.strip() != "-1"]
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run(
            [smi, "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return out.stdout.split() if out.returncode == 0 else []


def visible_gpus() -> int:
    """How many GPUs this process may use (``visible_gpu_ids``)."""
    return len(visible_gpu_ids())


def free_port() -> int:
    """A TCP port free right now on localhost, for the rendezvous of the ranks."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_command(
    config: RunConfig,
    run_dir: Path,
    *,
    gpus_available: int | None = None,
    max_cpu_processes: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and extra environment variables that train ``config`` in ``run_dir``.

    The trainer reads ``run_dir/config.json``: write it first (the worker's
    supervisor does). With GPUs, ``parallel.num_processes`` must not exceed them;
    without, not ``max_cpu_processes`` (a worker's cap on CPU ranks; None: no cap).
    """
    n, device = config.parallel.num_processes, config.parallel.device
    gpus = visible_gpus() if gpus_available is None else gpus_available
    if device == "cuda" and gpus == 0:
        raise ValueError("parallel.device: cuda asked for but this worker has no GPU; use auto or cpu")
    if device == "cpu":
        gpus = 0
    if gpus and n > gpus:
        raise ValueError(
            f"parallel.num_processes: {n} processes asked for but only {gpus} GPU(s) are available"
        )
    if not gpus and max_cpu_processes is not None and n > max_cpu_processes:
        raise ValueError(
            f"parallel.num_processes: {n} CPU processes asked for but this worker allows at most "
            f"{max_cpu_processes} (RUNWRIGHT_MAX_CPU_PROCESSES)"
        )
    train = _train_args(run_dir)
    env = _rank_env(config, gpus, n)
    if n == 1:
        return [sys.executable, *train], env
    argv = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(n),
        "--num_machines",
        "1",
        "--mixed_precision",
        config.parallel.mixed_precision,
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(free_port()),
        *train,
    ]
    return argv, env


TRAIN_MODULE = "modelcore.train"


def _train_args(run_dir: Path) -> list[str]:
    return ["-m", TRAIN_MODULE, "--run-dir", str(Path(run_dir).resolve())]


def holds_sigterm(argv: list[str]) -> bool:
    """Whether ``argv`` may be started with SIGTERM blocked: it runs the trainer, directly or through a launcher.

    ``modelcore.train`` unblocks SIGTERM once its stop handler is set, and the ranks of a
    launcher inherit its blocked mask, so a cancel that comes while they start waits for the
    handler instead of killing them. The launcher itself keeps it blocked: a stop signals the
    ranks, never a launcher that has them (``workers.jobs``).
    """
    return any(a == "-m" and b == TRAIN_MODULE for a, b in zip(argv, argv[1:], strict=False))


def _rank_env(config: RunConfig, gpus: int, local_processes: int) -> dict[str, str]:
    env = {"PYTHONUNBUFFERED": "1"}
    if gpus == 0:
        env["ACCELERATE_USE_CPU"] = "1"
        if config.parallel.device == "cpu":
            env["CUDA_VISIBLE_DEVICES"] = ""  # keep torch off the GPUs this host may have
        # One intra-op thread per rank: N ranks on N cores is faster than N * cores threads.
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // local_processes))
    return env


def processes_per_node(config: RunConfig) -> int:
    """Ranks each host of a multi-node run starts: ``parallel.num_processes / launcher.nodes``."""
    return config.parallel.num_processes // config.launcher.nodes


def node_command(
    config: RunConfig,
    run_dir: Path,
    *,
    node_rank: int,
    master_addr: str,
    master_port: int,
    gpus_available: int = 0,
    max_cpu_processes: int | None = None,
) -> tuple[list[str], dict[str, str]]:
    """argv and environment of one host's share of a multi-node run (``launcher.nodes`` torchruns).

    Every node runs ``processes_per_node`` ranks, ``node_rank`` ``* processes_per_node`` the first
    of them; node 0 hosts the rendezvous at ``master_addr:master_port`` (its own address).
    """
    nodes, device = config.launcher.nodes, config.parallel.device
    per_node = processes_per_node(config)
    if not 0 <= node_rank < nodes:
        raise ValueError(f"node rank {node_rank} is outside the run's {nodes} nodes")
    gpus = 0 if device == "cpu" else gpus_available
    if device == "cuda" and gpus == 0:
        raise ValueError("parallel.device: cuda asked for but this worker has no GPU; use auto or cpu")
    if gpus and per_node > gpus:
        raise ValueError(
            f"parallel.num_processes: {per_node} processes per node asked for but only {gpus} GPU(s) are available"
        )
    if not gpus and max_cpu_processes is not None and per_node > max_cpu_processes:
        raise ValueError(
            f"parallel.num_processes: {per_node} CPU processes per node asked for but this worker allows "
            f"at most {max_cpu_processes} (RUNWRIGHT_MAX_CPU_PROCESSES)"
        )
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={nodes}",
        f"--nproc-per-node={per_node}",
        f"--node-rank={node_rank}",
        "--rdzv-backend=static",
        f"--master-addr={master_addr}",
        f"--master-port={int(master_port)}",
        "--max-restarts=0",
        # A failed rank is noticed within a second, so the other nodes are stopped soon after.
        "--monitor-interval=1",
        *_train_args(run_dir),
    ]
    return argv, _rank_env(config, gpus, per_node)
