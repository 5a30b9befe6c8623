"""The first node's side of a multi-node run on the fleet (``launcher.nodes`` > 1, ``RUNWRIGHT_FLEET``).

The scheduler reserved ``processes_per_node`` GPUs on each of the run's hosts at once; the
first (node rank 0) got the launch. Its worker claims the run and supervises it as any run
(``workers.supervisor``): the run's status, heartbeat, cancel and events are its alone,
since global rank 0, the rank that writes ``events.jsonl``, runs on it. What this module
adds to that supervisor:

- the start: a port of its own host for the rendezvous, recorded with its registered
  address on the placement (``webapp.fleet.shares.open_rendezvous``); its own share of the
  ranks (``modelcore.launch.node_command``, node rank 0); then each other node's launch
  (``workers.node_share``) to that host's queue;
- each round: a share that failed stops the run (failed), a share whose host stopped
  beating, or that never started within ``SHARE_START_SECONDS``, stops it as lost (and
  ``train.max_restarts`` resumes it);
- the end: once its own ranks are gone it asks the shares to stop theirs and waits for
  them (or for their silence), so the run is final only when no node trains on.

The run directory must be on a filesystem every host shares (``RUNWRIGHT_DATA_DIR``), as
for Slurm: each node's ranks read the config and the checkpoint to resume from there.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from modelcore.config import RunConfig
from modelcore.launch import free_port, node_command
from webapp import enqueue
from webapp.fleet import services, shares
from webapp.fleet.models import Placement
from webapp.runs.models import RunStatus

log = logging.getLogger(__name__)

NODE_SHARE_TASK = "workers.node_share.launch_node_share"  # the name never changes once messages exist
# A share's launch waits in its host's queue and then for its GPUs: beyond this the run is lost.
SHARE_START_SECONDS = 300.0
SHARE_WAIT_POLL_SECONDS = 0.5


def multi_node(config: RunConfig) -> bool:
    """Whether this worker runs ``config`` as a fleet multi-node run (Slurm spans nodes its own way)."""
    return settings.FLEET_ENABLED and settings.LAUNCHER != "slurm" and config.launcher.nodes > 1


def share_lost_after() -> float:
    """Seconds without a share's beat after which its host counts as lost."""
    return float(max(settings.FLEET_HOST_LOST_SECONDS, 3 * settings.HEARTBEAT_SECONDS))


def command(
    config: RunConfig, run_dir: Path, *, run_id: int, attempt: int, gpu_ids: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """Node 0's launcher, after recording the attempt's rendezvous: this host's address and a free port."""
    address = (
        Placement.objects.filter(pk=run_id).values_list("host__address", flat=True).first() or "127.0.0.1"
    )
    port = free_port()
    if not shares.open_rendezvous(run_id, attempt, address, port):
        raise ValueError("the run's multi-node placement was released before it started")
    argv, env = node_command(
        config,
        run_dir,
        node_rank=0,
        master_addr=address,
        master_port=port,
        gpus_available=len(gpu_ids or []),
        max_cpu_processes=settings.MAX_CPU_PROCESSES,
    )
    if gpu_ids:
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpu_ids)
    return argv, env


def send_shares(run_id: int, attempt: int) -> list[int]:
    """Send each other node's launch to its host's queue; returns the node ranks sent to.

    A message that is lost leaves its share unstarted: the first node stops the run as lost
    after ``SHARE_START_SECONDS``.
    """
    sent = []
    for rank, queue in shares.sent_shares(run_id, attempt):
        try:
            enqueue.app.send_task(NODE_SHARE_TASK, (run_id, attempt, rank), queue=queue)
            sent.append(rank)
        except Exception:
            log.exception("could not send node %s of run %s to %s", rank, run_id, queue)
    return sent


@dataclass
class FirstNode:
    """What the supervisor of a multi-node run's first node checks of the other nodes."""

    run_id: int
    attempt: int
    start_within: float = SHARE_START_SECONDS
    report: shares.ShareReport | None = field(default=None, init=False)

    def _read(self) -> shares.ShareReport:
        self.report = shares.share_report(
            self.run_id, self.attempt, lost_after=share_lost_after(), start_within=self.start_within
        )
        return self.report

    def stop_reason(self) -> str:
        """ "node-failed", "node-lost" or "" (each round while the run trains)."""
        report = self._read()
        if report.failed:
            return "node-failed"
        return "node-lost" if report.silent or report.lost else ""

    def stop_and_wait(self, grace: float) -> shares.ShareReport:
        """Ask every share to stop and wait until each ended or went silent (at most ``grace`` + the silence)."""
        shares.stop_shares(self.run_id, self.attempt)
        deadline = time.monotonic() + grace + share_lost_after() + 5.0
        while True:
            report = self._read()
            if report.all_ended or time.monotonic() >= deadline:
                return report
            time.sleep(SHARE_WAIT_POLL_SECONDS)

    def release_lost_nodes(self) -> bool:
        """After the run was stored lost: take it off its hosts, its next placement avoiding the lost shares' hosts.

        A resume (automatic or a person's) that kept the placement would send the next
        attempt's share to the host that just went silent, when it comes before that host
        counts as silent to the scheduler (``services.unplace_lost_nodes``). Whether taken off.
        """
        if self.report is None or not self.report.gone_hosts:
            return False
        return services.unplace_lost_nodes(self.run_id, self.report.gone_hosts)

    def decide(self, reported: str | None, own_error: str = "") -> tuple[str, str] | None:
        """The run's end from its shares' (after ``stop_and_wait``): None when they change nothing.

        ``own_error``: what node 0's trainer reported, shown beside the failed nodes' errors: when
        ranks fail together, which node failed first is not known here (the others' collectives
        fail with it), so the run's error shows every node's.
        """
        report = self.report
        if report is None or reported == RunStatus.COMPLETED:
            return None
        if report.silent:
            lost = ", ".join(f"node {rank} ({host})" for rank, host in report.silent)
            return RunStatus.LOST, (
                f"The worker of {lost} stopped beating while the run trained (or its share never started); "
                "every node's share was stopped. Resume the run from its last checkpoint."
            )
        if report.lost:
            rank, why = report.lost[0]
            return RunStatus.LOST, f"Node {rank}: {why} Every node's share was stopped; resume the run."
        if report.failed:
            nodes = ", ".join(str(rank) for rank, _ in report.failed)
            parts = [f"--- node {rank} ---\n{error}" for rank, error in report.failed]
            if own_error:
                parts.append(f"--- node 0 (rank 0's report) ---\n{own_error}")
            return RunStatus.FAILED, (
                f"Node {nodes}'s ranks failed; every node's share was stopped.\n\n" + "\n\n".join(parts)
            )
        return None
