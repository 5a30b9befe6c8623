"""A real Slurm cluster (Debian's ``slurm-wlm`` + ``munge``) for the tests: one node, or several on this machine.

Everything lives in one temporary folder: the munge key and socket, ``slurm.conf``,
the state and spool folders, the logs. ``slurmctld`` and the ``slurmd`` run as the
invoking user (root in CI) in the foreground as our children, so stopping the
cluster is killing the processes we started. Clients find it through
``SLURM_CONF``.

By default the one node is this host. With ``nodes`` given, each is one more ``slurmd -N
<name>`` on this machine: the nodes share ``NodeHostname=localhost`` and ``NodeAddr=127.0.0.1``
and differ in their ``Port=``, spool folder, pid and log file (``%n`` in ``slurm.conf``), so
a job spans several "nodes" whose tasks all run here. ``gpus_per_node`` declares that many
GPUs per node as ``gres/gpu`` with ``AutoDetect=off``, backed by links to ``/dev/null``
named ``nvidiaN`` in the cluster's folder: the controller schedules them and each step's
``CUDA_VISIBLE_DEVICES`` and ``SLURM_GPUS_ON_NODE`` are Slurm's, with no GPU behind them.

No cgroups (``proctrack/linuxproc``, ``task/none``): a container has no cgroup tree of
its own to hand to Slurm. No accounting daemon: ``sacct`` is off, and the launcher
reads finished jobs from ``squeue --states=all`` while the controller remembers them
(``MinJobAge``).
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

BINARIES = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol")
INSTALL_HINT = "apt-get install -y slurm-wlm munge (Debian; as root), as .ci/run does"
NODE_CPUS = 8  # more than this machine's cores: the tests' ranks are light (config_overrides)
# The two-node cluster's nodes and each one's fake GPUs.
TWO_NODES = ("n1", "n2")
GPUS_PER_NODE = 2


def missing_binaries() -> list[str]:
    return [b for b in BINARIES if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


@dataclass
class SlurmCluster:
    root: Path
    # Node names, each its own slurmd on this machine; empty: one node, this host.
    nodes: tuple[str, ...] = ()
    gpus_per_node: int = 0
    processes: list[subprocess.Popen] = field(default_factory=list)

    @property
    def node(self) -> str:
        """The first node (the only one of a one-node cluster)."""
        return self.node_names[0]

    @property
    def node_names(self) -> tuple[str, ...]:
        return self.nodes or (socket.gethostname(),)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    def _node_lines(self) -> list[str]:
        gres = f" Gres=gpu:{self.gpus_per_node}" if self.gpus_per_node else ""
        if not self.nodes:
            return [f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={NODE_CPUS}{gres} State=UNKNOWN"]
        # One slurmd per node on this machine: the same host and address, each its own port.
        return [
            f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={free_port()} "
            f"CPUs={NODE_CPUS}{gres} State=UNKNOWN"
            for name in self.nodes
        ]

    def _write_gres(self) -> None:
        """``gres.conf``: each node's fake GPUs, links to ``/dev/null`` whose names end in the device index."""
        lines = ["AutoDetect=off"]
        for name in self.node_names:
            devices = self.root / "dev" / name
            devices.mkdir(parents=True, exist_ok=True)
            for index in range(self.gpus_per_node):
                # slurmd wants a character device: /dev/null under the GPU's name (the index is its digits).
                (devices / f"nvidia{index}").symlink_to("/dev/null")
            last = self.gpus_per_node - 1
            lines.append(f"NodeName={name} Name=gpu File={devices}/nvidia[0-{last}]")
        (self.root / "gres.conf").write_text("\n".join(lines) + "\n")

    def write_config(self) -> None:
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for name in self.nodes:
            (self.root / "spool" / name).mkdir(exist_ok=True)
        (self.root / "munge").chmod(0o700)
        user = getpass.getuser()
        r = self.root
        # %n: the node's name, so several slurmd on one machine keep apart.
        per_node = "/%n" if self.nodes else ""
        if self.gpus_per_node:
            self._write_gres()
        self.conf.write_text(
            "\n".join(
                [
                    "ClusterName=runwright-test",
                    f"SlurmctldHost={socket.gethostname()}(127.0.0.1)",
                    f"SlurmUser={user}",
                    f"SlurmdUser={user}",
                    f"SlurmctldPort={free_port()}",
                    f"SlurmdPort={free_port()}",
                    "AuthType=auth/munge",
                    "CredType=cred/munge",
                    f"AuthInfo=socket={r}/munge/munge.socket",
                    f"StateSaveLocation={r}/state",
                    f"SlurmdSpoolDir={r}/spool{per_node}",
                    f"SlurmctldPidFile={r}/slurmctld.pid",
                    f"SlurmdPidFile={r}/slurmd{per_node.replace('/', '-')}.pid",
                    f"SlurmctldLogFile={r}/log/slurmctld.log",
                    f"SlurmdLogFile={r}/log/slurmd{per_node.replace('/', '-')}.log",
                    "SlurmctldDebug=info",
                    "SlurmdDebug=info",
                    "ProctrackType=proctrack/linuxproc",
                    "TaskPlugin=task/none",
                    "JobAcctGatherType=jobacct_gather/none",
                    "AccountingStorageType=accounting_storage/none",
                    "JobCompType=jobcomp/none",
                    "MpiDefault=none",
                    "SchedulerType=sched/backfill",
                    "SelectType=select/cons_tres",
                    "SelectTypeParameters=CR_CPU",
                    "SlurmdParameters=config_overrides",
                    "ReturnToService=2",
                    "MinJobAge=3600",
                    "KillWait=10",
                    "InactiveLimit=0",
                    "SchedulerParameters=sched_interval=1",
                    *(["GresTypes=gpu"] if self.gpus_per_node else []),
                    *self._node_lines(),
                    f"PartitionName=debug Nodes={','.join(self.node_names)} Default=YES "
                    "MaxTime=INFINITE State=UP",
                    "",
                ]
            )
        )

    def start(self) -> None:
        self.write_config()
        r = self.root
        key = r / "munge" / "munge.key"
        subprocess.run([_binary("mungekey"), "--create", f"--keyfile={key}"], check=True)
        key.chmod(0o400)
        munge_argv = [
            _binary("munged"),
            "--foreground",
            "--force",
            f"--key-file={key}",
            f"--socket={r}/munge/munge.socket",
            f"--pid-file={r}/munge/munged.pid",
            f"--log-file={r}/log/munged.log",
            f"--seed-file={r}/munge/munged.seed",
        ]
        self._spawn(munge_argv, "munged")
        self._wait_for(lambda: (r / "munge" / "munge.socket").exists(), "munged's socket")
        self._spawn([_binary("slurmctld"), "-D", "-i", "-f", str(self.conf)], "slurmctld")
        self._wait_for(lambda: self.scontrol("ping").returncode == 0, "slurmctld to answer")
        if not self.nodes:
            self._spawn([_binary("slurmd"), "-D", "-f", str(self.conf)], "slurmd")
        for name in self.nodes:
            self._spawn([_binary("slurmd"), "-D", "-N", name, "-f", str(self.conf)], f"slurmd-{name}")
        self._wait_for(self.node_idle, "the nodes to be idle")

    def _spawn(self, argv: list[str], name: str) -> None:
        out = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - closed with the process
        self.processes.append(
            subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **self.env})
        )
        out.close()

    def _wait_for(self, condition, what: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            for proc in self.processes:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"{proc.args[0]} exited ({proc.returncode}) waiting for {what}:\n{self.logs()}"
                    )
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}:\n{self.logs()}")
            time.sleep(0.2)

    def scontrol(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["scontrol", *args], capture_output=True, text=True, env={**os.environ, **self.env}, timeout=30
        )

    def node_state(self, node: str = "") -> str:
        out = self.scontrol("show", "node", node or self.node, "-o").stdout
        for item in out.split():
            if item.startswith("State="):
                return item.removeprefix("State=")
        return ""

    def node_up(self, node: str) -> bool:
        """Up and taking jobs: no DRAIN, DOWN or NOT_RESPONDING flag (``IDLE+DRAIN`` is not)."""
        base, *flags = self.node_state(node).split("+")
        return base in ("IDLE", "MIXED", "ALLOCATED") and not flags

    def node_idle(self) -> bool:
        """Every node up and taking jobs."""
        return all(self.node_up(node) for node in self.node_names)

    def set_node(self, state: str, reason: str = "", node: str = "") -> None:
        """Set one node's state (the first by default), as an administrator would."""
        args = ["update", f"nodename={node or self.node}", f"state={state}"]
        if reason:
            args.append(f"reason={reason}")
        result = self.scontrol(*args)
        assert result.returncode == 0, result.stderr

    def resume_node(self) -> None:
        """Every node that is not up back in service."""
        for node in self.node_names:
            if not self.node_up(node):
                self.set_node("resume", node=node)
        self._wait_for(self.node_idle, "the nodes to come back")

    def logs(self) -> str:
        parts = []
        for path in sorted((self.root / "log").glob("*")):
            text = path.read_text(errors="replace")
            parts.append(f"--- {path.name}\n{text[-3000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in reversed(self.processes):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.processes.clear()
