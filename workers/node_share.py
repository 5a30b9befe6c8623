"""One further host's share of a multi-node run: its ranks, started and watched by its own worker.

The first node's supervisor (``workers.first_node``) sends ``launch_node_share(run, attempt,
node_rank)`` to this host's queue once it started its own ranks. The task leases this host's
GPUs for the share, claims it (``webapp.fleet.shares.start_share``: one claim per attempt and
rank, so a redelivered message does nothing) and runs a ``ShareSupervisor``: the same job
runner as a run's (``workers.jobs``), lighter, since the run's status, events and heartbeat
belong to the first node. Each round it

- stops its ranks when the run is no longer this attempt's and live (ended, lost, relaunched),
  when a cancel was asked for (they checkpoint with the others), or when the first node
  asked (its own trainer ended);
- beats the share's heartbeat, which the first node watches: a share that goes silent (its
  worker died) makes the run lost.

It writes how its ranks ended: completed (exit 0: finished, or stopped on request after their
checkpoint), failed (any other exit, with the end of its launcher log, which the first node
puts in the run's error), lost (its worker shut down or was interrupted).
"""

from __future__ import annotations

import logging
import socket

from celery import shared_task
from django.conf import settings

from modelcore.config import ConfigError, RunConfig
from modelcore.launch import holds_sigterm, node_command, processes_per_node
from webapp.fleet import shares
from webapp.fleet.models import ShareState
from webapp.runs.models import SUPERVISED_STATUSES, Run
from workers import first_node, gpus, job_processes
from workers.jobs import JobRunner, Launch, log_tail
from workers.supervisor import ERROR_TAIL_CHARS, MAX_CANCEL_GRACE_SECONDS, POLL_SECONDS, cancel_grace_seconds

log = logging.getLogger(__name__)

SHARE_TIME_LIMIT_SECONDS = 30 * 24 * 3600  # as long as the run's own launch may supervise it
GPU_RETRY_SECONDS = 5  # the first node waits SHARE_START_SECONDS for this share at most


def share_log_name(node_rank: int) -> str:
    return f"launcher-node{node_rank}.log"


class ShareSupervisor(JobRunner):
    """One node's ranks of one attempt of a multi-node run (node rank >= 1)."""

    noun = "node share"
    runner_name = "share supervisor"
    failed_status = ShareState.FAILED

    def __init__(
        self,
        run: Run,
        config: RunConfig,
        node_rank: int,
        *,
        gpu_ids: list[str] | None = None,
        process_tag: str = "",
        poll_seconds: float = POLL_SECONDS,
    ):
        super().__init__(
            tag=process_tag or job_processes.new_tag("run", run.id),
            description=f"run {run.id} attempt {run.attempt} node {node_rank}",
            poll_seconds=poll_seconds,
            heartbeat_seconds=float(settings.HEARTBEAT_SECONDS),
            kill_after=cancel_grace_seconds(config),
        )
        self.run = run
        self.attempt = run.attempt
        self.config = config
        self.node_rank = node_rank
        self.gpu_ids = gpu_ids or []

    # --- the start -------------------------------------------------------------

    def prepare(self) -> Launch:
        meeting = shares.rendezvous(self.run.id)
        if meeting is None:
            raise ValueError("the run's rendezvous is gone (its placement was released)")
        argv, env = node_command(
            self.config,
            self.run.run_dir,
            node_rank=self.node_rank,
            master_addr=meeting.master_addr,
            master_port=meeting.master_port,
            gpus_available=len(self.gpu_ids),
            max_cpu_processes=settings.MAX_CPU_PROCESSES,
        )
        if self.gpu_ids:
            env["CUDA_VISIBLE_DEVICES"] = ",".join(self.gpu_ids)
        # The first node wrote the run directory and its config.json before sending this share.
        header = f"--- attempt {self.attempt} node {self.node_rank}: {' '.join(argv)}\n"
        return Launch(
            argv,
            env,
            cwd=self.run.run_dir,
            log_path=self.run.run_dir / share_log_name(self.node_rank),
            header=header,
            hold_sigterm=holds_sigterm(argv),
        )

    # --- each round ------------------------------------------------------------

    def check(self) -> None:
        row = Run.objects.filter(pk=self.run.id).values("status", "attempt", "cancel_requested").first()
        if row is None or row["attempt"] != self.attempt or row["status"] not in SUPERVISED_STATUSES:
            self.request_stop("not-owner")  # ended, lost or relaunched: nothing to train for
            return
        if row["cancel_requested"]:
            self.request_stop("cancel")
        asked = shares.stop_requested(self.run.id, self.attempt, self.node_rank)
        if asked is None:
            self.request_stop("not-owner")
        elif asked:
            self.request_stop("stop")

    def heartbeat(self) -> None:
        if shares.beat_share(self.run.id, self.attempt, self.node_rank) is None:
            self.request_stop("not-owner")

    # --- the end ---------------------------------------------------------------

    def decide(self, code: int) -> tuple[str, str]:
        if self.stop.reason in ("shutdown", "interrupted"):
            return ShareState.LOST, f"the worker of node {self.node_rank} shut down while the run trained."
        if code == 0:
            return ShareState.COMPLETED, ""  # finished, or stopped on request and checkpointed
        if self.stop.reason in ("cancel", "stop", "not-owner") and self.stop.killed:
            # Asked to stop and killed after its grace (a slow exit, as node 0's own ranks may be):
            # what the run became is node 0's to say, not a failure of this node.
            return (
                ShareState.COMPLETED,
                f"stopped ({self.stop.reason}); killed {self.kill_after:.0f} s after SIGTERM",
            )
        # Non-zero even when stopped on request: its ranks may have failed first (node 0 asks its
        # shares to stop as soon as its own trainer ended, which a failure here may have caused).
        how = f"were killed by signal {-code}" if code < 0 else f"exited with code {code}"
        tail = log_tail(
            self.run.run_dir / share_log_name(self.node_rank),
            ERROR_TAIL_CHARS,
            section="--- attempt ",
            missing="(no launcher output)",
        )
        return ShareState.FAILED, f"Its ranks {how}. End of {share_log_name(self.node_rank)}:\n\n{tail}"

    def write_final(self, status: str, error: str) -> bool:
        return shares.end_share(self.run.id, self.attempt, self.node_rank, status, error)

    def interrupted_message(self, exc: BaseException) -> str:
        return f"the share supervisor of node {self.node_rank} stopped ({type(exc).__name__}: {exc})."


@shared_task(
    bind=True,
    name=first_node.NODE_SHARE_TASK,
    ignore_result=True,
    acks_late=True,
    soft_time_limit=SHARE_TIME_LIMIT_SECONDS,
    time_limit=SHARE_TIME_LIMIT_SECONDS + int(MAX_CANCEL_GRACE_SECONDS) + 120,
)
def launch_node_share(self, run_id: int, attempt: int, node_rank: int) -> str | None:
    """Start and watch this host's share of the run's attempt; a share not this host's to start is left alone."""
    worker = self.request.hostname or socket.gethostname()
    run = Run.objects.filter(pk=run_id, attempt=attempt, status__in=SUPERVISED_STATUSES).first()
    if run is None:
        log.info("run %s attempt %s is not live; node %s not started", run_id, attempt, node_rank)
        return None
    try:
        config = RunConfig.from_dict(run.config)
    except ConfigError as exc:
        shares.end_share(
            run_id, attempt, node_rank, ShareState.FAILED, f"The stored config does not validate: {exc}"
        )
        return None
    job_processes.reap_orphans()
    tag = job_processes.new_tag("run", run_id)
    available = gpus.host_gpus()
    needed = 0 if config.parallel.device == "cpu" or not available else processes_per_node(config)
    try:
        with gpus.lease(needed, holder=tag) as gpu_ids:
            if not shares.start_share(run_id, attempt, node_rank, worker):
                log.info(
                    "node %s of run %s attempt %s is not %s's to start", node_rank, run_id, attempt, worker
                )
                return None
            return ShareSupervisor(run, config, node_rank, gpu_ids=gpu_ids, process_tag=tag).run_job()
    except gpus.GpusBusy as exc:
        log.info("node %s of run %s waits for GPUs: %s", node_rank, run_id, exc)
        raise self.retry(countdown=GPU_RETRY_SECONDS, max_retries=None) from exc
