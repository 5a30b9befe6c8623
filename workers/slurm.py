"""The Slurm launcher: one training attempt as one ``sbatch`` job (``RUNWRIGHT_LAUNCHER=slurm``).

The worker's supervisor stays the job's runner (``workers.jobs.JobRunner``): it writes the run
directory on the cluster's shared filesystem (``RUNWRIGHT_DATA_DIR``), submits the job, tails
``events.jsonl`` and decides the final state as for a local run. ``SlurmJob`` is the job handle
it watches instead of a local process group:

- start: a job script that runs ``srun`` one task per node, each a ``torchrun`` with the c10d
  rendezvous on the job's first node (at its ``NodeAddr``, which ``sinfo`` gives, on a port free
  there unless ``RUNWRIGHT_SLURM_RDZV_PORT`` fixes one), each running
  ``python -m modelcore.train --run-dir DIR``. A job that asks for GPUs (``parallel.device`` not
  ``cpu``) gets ``--gpus-per-node`` = processes per node; Slurm sets each node's
  ``CUDA_VISIBLE_DEVICES`` and torchrun gives rank ``i`` of the node its ``i``-th device.
  Every value from the config goes to ``sbatch`` as an argument (no shell) and was checked by
  the schema (``launcher.*``: Slurm names only); the script holds only shell-quoted paths,
  numbers and our own text. The worker's environment (the engine on ``PYTHONPATH``, the CPU
  rank settings) reaches the ranks through ``sbatch``'s default ``--export=ALL``.
- watch: ``squeue`` (which keeps finished jobs for the controller's ``MinJobAge``), then
  ``sacct`` for a job the controller forgot. A pending job's reason goes to the run page.
- stop: ``scancel --signal=TERM`` to the job's steps (torchrun passes it to the ranks, which
  checkpoint and exit), then plain ``scancel`` after the grace period.
- the time limit: ``--signal=TERM@S`` asks Slurm for that SIGTERM S seconds before the limit, so
  the trainer checkpoints; the run ends ``lost`` and, with ``train.max_restarts``, the lost-run
  recovery queues a new attempt, a new job that resumes from that checkpoint.
- a node failure (``NODE_FAIL``), a failed boot or a preemption is ``lost`` too.
- a restart: the job does not die with its supervisor (Slurm runs it, not the worker), so a
  worker that starts again takes back its runs whose job Slurm still knows and watches that
  job (``attach``) instead of letting the run be marked lost and submitted again
  (``workers.slurm_reattach``).
"""

from __future__ import annotations

import logging
import math
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from modelcore.config import RunConfig
from webapp.runs.models import Run
from workers import job_processes
from workers.jobs import JobHandle, Launch, engine_env

log = logging.getLogger(__name__)

JOB_SCRIPT = "slurm-job.sh"
# Where Slurm writes the job's output, next to the run's other files (%j: the job id).
STDOUT_PATTERN = "slurm-%j.out"
STDERR_PATTERN = "slurm-%j.err"
QUERY_EVERY_SECONDS = 1.0  # squeue at most this often per job
COMMAND_TIMEOUT_SECONDS = 60
# How long reap waits for Slurm to report the end of a job it was told to kill.
REAP_PATIENCE_SECONDS = 120.0
# Slurm checks --signal's time about once a minute: ask for at least that much warning.
MIN_SIGNAL_BEFORE_LIMIT_SECONDS = 60
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
    }
)
# Ended by the cluster, not by the job: the attempt is lost (and resumable).
LOST_STATES = frozenset({"NODE_FAIL", "PREEMPTED", "BOOT_FAIL"})
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.-]{0,64}")


class SlurmError(OSError):
    """A Slurm command failed (submission refused, controller unreachable); the message is Slurm's."""


@dataclass(frozen=True)
class SlurmJobSpec:
    """Everything ``sbatch`` is told about one attempt, checked and with the operator's defaults in."""

    name: str
    nodes: int
    procs_per_node: int
    gpus_per_node: int
    partition: str
    account: str
    qos: str
    time_limit_min: int  # 0: the partition's own
    signal_before_s: int  # SIGTERM this long before the time limit
    rdzv_port: int  # 0: a port free on the first node when the job starts


def _operator_name(value: str, variable: str) -> str:
    if not _SLURM_NAME.fullmatch(value):
        raise ValueError(f"{variable} must be at most 64 letters, digits and . _ - (got {value!r})")
    return value


def job_spec(config: RunConfig, *, name: str, stop_grace_s: float) -> SlurmJobSpec:
    """The attempt's Slurm request: the config's ``launcher`` section over the operator's defaults."""
    launcher, parallel = config.launcher, config.parallel
    procs_per_node = parallel.num_processes // launcher.nodes
    return SlurmJobSpec(
        name=name,
        nodes=launcher.nodes,
        procs_per_node=procs_per_node,
        gpus_per_node=0 if parallel.device == "cpu" else procs_per_node,
        partition=launcher.partition or _operator_name(settings.SLURM_PARTITION, "RUNWRIGHT_SLURM_PARTITION"),
        account=launcher.account or _operator_name(settings.SLURM_ACCOUNT, "RUNWRIGHT_SLURM_ACCOUNT"),
        qos=launcher.qos or _operator_name(settings.SLURM_QOS, "RUNWRIGHT_SLURM_QOS"),
        time_limit_min=launcher.time_limit_min or max(0, int(settings.SLURM_TIME_LIMIT_MIN)),
        signal_before_s=max(MIN_SIGNAL_BEFORE_LIMIT_SECONDS, math.ceil(stop_grace_s)),
        rdzv_port=int(settings.SLURM_RDZV_PORT),
    )


def node_command(config: RunConfig, run_dir: Path) -> tuple[list[str], dict[str, str]]:
    """What each node runs (before the rendezvous address, which only the job knows) and its environment."""
    argv = [sys.executable, "-m", "modelcore.train", "--run-dir", str(Path(run_dir).resolve())]
    env = {"PYTHONUNBUFFERED": "1"}
    if config.parallel.device == "cpu":
        # CPU ranks on gloo, as modelcore.launch does locally; one thread each.
        env |= {"ACCELERATE_USE_CPU": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    return argv, env


def job_script(spec: SlurmJobSpec, train_argv: list[str], *, header: str = "") -> str:
    """The batch script: ``srun`` one torchrun per node, the c10d rendezvous on the first node.

    ``train_argv`` is ``python -m modelcore.train ...``; its interpreter runs torchrun too.
    Everything but our own fixed text is shell-quoted.
    """
    python, *train = train_argv
    if train[:2] != ["-m", "modelcore.train"]:
        raise ValueError("the Slurm launcher runs python -m modelcore.train")
    torchrun = [
        python,
        "-m",
        "torch.distributed.run",
        f"--nnodes={spec.nodes}",
        f"--nproc-per-node={spec.procs_per_node}",
        "--rdzv-backend=c10d",
    ]
    comment = "".join(f"# {line}\n" for line in header.splitlines() if line.isprintable())
    if spec.rdzv_port:
        port = f"rdzv_port={int(spec.rdzv_port)}\n"
    else:
        # The batch script runs on the job's first node: a port free there now. A fixed port
        # would make two jobs sharing a node meet at one store, the later one's rendezvous
        # then living in the earlier job's torchrun.
        free = "import socket; s = socket.socket(); s.bind(('', 0)); print(s.getsockname()[1])"
        port = f"rdzv_port=$({shlex.quote(python)} -c {shlex.quote(free)})\n"
    return (
        "#!/bin/bash\n"
        "# Written by Runwright's Slurm launcher (workers/slurm.py).\n"
        f"{comment}"
        "set -eu\n"
        'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)\n'
        # The first node's NodeAddr: where its name is not its host's (several slurmd on one host).
        'head_addr=$(sinfo -h -N -n "$head_node" -o %o | head -n 1)\n'
        f"{port}"
        "exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 "
        f"{shlex.join(torchrun)} "
        '--rdzv-id="$SLURM_JOB_ID" --rdzv-endpoint="${head_addr:-$head_node}:$rdzv_port" '
        f"{shlex.join(train)}\n"
    )


def sbatch_argv(spec: SlurmJobSpec, script: Path, run_dir: Path) -> list[str]:
    argv = [
        "sbatch",
        "--parsable",
        f"--job-name={spec.name}",
        f"--chdir={run_dir}",
        f"--output={run_dir / STDOUT_PATTERN}",
        f"--error={run_dir / STDERR_PATTERN}",
        f"--nodes={spec.nodes}",
        "--ntasks-per-node=1",
        f"--cpus-per-task={spec.procs_per_node}",
        f"--signal=TERM@{spec.signal_before_s}",
        "--no-requeue",  # a new attempt is Runwright's decision (train.max_restarts), not Slurm's
    ]
    if spec.gpus_per_node:
        argv.append(f"--gpus-per-node={spec.gpus_per_node}")
    for option, value in (("partition", spec.partition), ("account", spec.account), ("qos", spec.qos)):
        if value:
            argv.append(f"--{option}={value}")
    if spec.time_limit_min:
        argv.append(f"--time={spec.time_limit_min}")
    argv.append(str(script))
    return argv


def _slurm(argv: list[str], *, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            env=env,
            timeout=COMMAND_TIMEOUT_SECONDS,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        raise SlurmError(f"{argv[0]} did not answer within {COMMAND_TIMEOUT_SECONDS} s") from exc
    except FileNotFoundError as exc:
        raise SlurmError(f"{argv[0]} is not installed on this worker (RUNWRIGHT_LAUNCHER=slurm)") from exc


def query_state(job_id: str) -> tuple[str, str] | None:
    """``(state, reason)`` of a job from squeue, else sacct; None when neither knows it (or Slurm is away)."""
    try:
        found = _slurm(["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T|%r"])
    except SlurmError:
        log.warning("squeue failed for Slurm job %s", job_id, exc_info=True)
        return None
    line = found.stdout.strip().splitlines()[:1] if found.returncode == 0 else []
    if line:
        state, _, reason = line[0].partition("|")
        return state.strip(), "" if reason.strip() in ("None", "(null)") else reason.strip()
    try:
        found = _slurm(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State,Reason"])
    except SlurmError:
        return None
    line = found.stdout.strip().splitlines()[:1] if found.returncode == 0 else []
    if not line:
        return None
    state, _, reason = line[0].partition("|")
    # sacct says "CANCELLED by 0"; the state is the first word.
    return state.split()[0] if state.split() else "", "" if reason in ("None", "(null)") else reason


class SlurmJob(JobHandle):
    """One attempt's Slurm job, watched through squeue/sacct and stopped with scancel."""

    def __init__(self, tag: str, spec: SlurmJobSpec):
        self.tag = tag
        self.spec = spec
        self.job_id = ""
        self.state = ""
        self.reason = ""
        self._reported: tuple[str, str] | None = None
        self._queried_at = float("-inf")
        self._forgotten_since: float | None = None  # neither squeue nor sacct knew the job

    # --- start ---------------------------------------------------------------------

    def attach(self, job_id: str) -> None:
        """Watch a job submitted before (a restarted worker taking its run back): ``start`` then submits nothing."""
        if not job_id.isdigit():
            raise SlurmError(f"{job_id!r} is not a Slurm job id")
        self.job_id = job_id
        self.refresh(force=True)

    def start(self, launch: Launch, description: str) -> int:
        if self.job_id:
            return int(self.job_id)  # attached: the job runs already, its script and folder with it
        script = launch.cwd / JOB_SCRIPT
        script.write_text(job_script(self.spec, launch.argv, header=f"{description}\n{launch.header}"))
        script.chmod(0o700)
        env = engine_env({**launch.env, **job_processes.job_env(self.tag)}, defaults=launch.env_defaults)
        with open(launch.log_path, "ab" if launch.header else "wb") as out:
            out.write(launch.header.encode())
            submitted = _slurm(sbatch_argv(self.spec, script, launch.cwd), env=env)
            out.write(f"sbatch: {submitted.stdout.strip()} {submitted.stderr.strip()}\n".encode())
        if submitted.returncode != 0:
            raise SlurmError(
                f"sbatch refused the job: {submitted.stderr.strip() or submitted.stdout.strip()}"
            )
        self.job_id = submitted.stdout.strip().split(";")[0]
        if not self.job_id.isdigit():
            raise SlurmError(f"sbatch answered {submitted.stdout.strip()!r}, not a job id")
        self.state = "PENDING"
        return int(self.job_id)

    # --- watch ---------------------------------------------------------------------

    def refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._queried_at < QUERY_EVERY_SECONDS:
            return
        self._queried_at = now
        found = query_state(self.job_id)
        if found is None:
            # Forgotten by the controller with no accounting, or Slurm away: a while of that is an end.
            self._forgotten_since = self._forgotten_since or now
            if now - self._forgotten_since > REAP_PATIENCE_SECONDS and self.state not in FINAL_STATES:
                self.state, self.reason = "UNKNOWN", "Slurm no longer knows the job"
            return
        self._forgotten_since = None
        self.state, self.reason = found

    def exited(self) -> bool:
        self.refresh()
        return self.state in FINAL_STATES or self.state == "UNKNOWN"

    def scheduler_state(self) -> tuple[str, str] | None:
        current = (self.state, self.reason if self.state == "PENDING" else "")
        if current == self._reported:
            return None
        self._reported = current
        return current

    # --- stop ----------------------------------------------------------------------

    def terminate(self) -> None:
        if self.state == "PENDING":
            self._scancel()  # nothing to checkpoint yet
        else:
            self._scancel("--signal=TERM")

    def terminate_late_starters(self) -> None:
        # A job that was pending at the first SIGTERM was cancelled outright.
        return None

    def kill_all(self) -> bool:
        self._scancel()
        return True

    def _scancel(self, *options: str) -> None:
        try:
            result = _slurm(["scancel", *options, self.job_id])
        except SlurmError:
            log.warning("scancel %s %s failed", " ".join(options), self.job_id, exc_info=True)
            return
        if result.returncode != 0:
            log.warning("scancel %s %s: %s", " ".join(options), self.job_id, result.stderr.strip())

    def reap(self) -> int:
        """Wait for Slurm to report the job's end (cancelling it when it has not ended); its exit code."""
        if not self.exited():
            self.kill_all()
        deadline = time.monotonic() + REAP_PATIENCE_SECONDS
        while not self.exited() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not self.exited():
            log.error("Slurm job %s did not end %.0f s after scancel", self.job_id, REAP_PATIENCE_SECONDS)
        return 0 if self.state == "COMPLETED" else 1

    def lost_reason(self, *, reported: str | None, stopped: bool) -> str:
        if reported == "completed":
            return ""
        where = f"Slurm job {self.job_id}"
        if self.state in LOST_STATES:
            why = f": {self.reason}" if self.reason else ""
            return f"{where} ended with {self.state}{why}; resume the run from its last checkpoint."
        if self.state == "TIMEOUT" or (not stopped and reported == "cancelled"):
            return (
                f"{where} reached its time limit; the trainer was stopped (with a checkpoint where it "
                "managed). With train.max_restarts a new job resumes from it."
            )
        if self.state == "CANCELLED" and not stopped:
            return f"{where} was cancelled in Slurm (scancel outside Runwright)."
        return ""


def job_output_paths(run_dir: Path, job_id: str) -> tuple[Path, Path]:
    """The job's stdout and stderr files in its run directory (``sbatch --output/--error``)."""
    return (
        run_dir / STDOUT_PATTERN.replace("%j", job_id),
        run_dir / STDERR_PATTERN.replace("%j", job_id),
    )


def cancel_earlier_job(job_id: str) -> str:
    """Cancel an earlier attempt's job (its supervisor died; it may still train) and wait for its end.

    Two jobs must never write one run directory. Returns the job's last state.
    """
    if not job_id.isdigit():
        return ""
    found = query_state(job_id)
    if found is None or found[0] in FINAL_STATES:
        return found[0] if found else ""
    log.warning("Slurm job %s of an earlier attempt is still %s; cancelling it", job_id, found[0])
    _slurm(["scancel", job_id])
    deadline = time.monotonic() + REAP_PATIENCE_SECONDS
    while time.monotonic() < deadline:
        found = query_state(job_id)
        if found is None or found[0] in FINAL_STATES:
            return found[0] if found else ""
        time.sleep(0.5)
    raise SlurmError(f"Slurm job {job_id} of an earlier attempt did not end after scancel")


def record_job(run_id: int, attempt: int, job_id: int) -> bool:
    """The attempt's Slurm job on its run row (fenced by the attempt, like every supervisor write)."""
    return (
        Run.objects.filter(pk=run_id, attempt=attempt).update(
            slurm_job_id=str(job_id), slurm_state="PENDING", slurm_reason=""
        )
        == 1
    )


def record_state(run_id: int, attempt: int, state: str, reason: str) -> bool:
    """What squeue says of the attempt's job: its state, and Slurm's reason while it waits."""
    return (
        Run.objects.filter(pk=run_id, attempt=attempt).update(
            slurm_state=state[:32], slurm_reason=reason[:200]
        )
        == 1
    )
