"""Runs one training attempt: start the trainer, tail its events into the database, stop it.

The process side (start, watch, stop, reap, the final write's retries) is the job
runner's (``workers.jobs``); what is the supervisor's own:

- it ingests ``events.jsonl`` from the committed byte offset, each round and once more
  after the trainer is gone, and offers each checkpoint to the run's periodic evals;
- it owns the run's row while it runs: the heartbeat (on the database's clock), the
  rows of checkpoints that keep-last deleted, ``cancel_requested``, and a run lost
  or relaunched elsewhere (stopped as not its own);
- it decides the final status from the trainer's last status event, why it was
  stopped and its exit code. A run is only ever shown final when its processes are gone.

A stop waits ``train.cancel_grace_s`` (sized from the checkpoint's bytes by default)
after SIGTERM to the ranks, which checkpoint and exit, before SIGKILL.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from pathlib import Path

from django.apps import apps
from django.conf import settings

from modelcore.checkpoint_layout import CHECKPOINTS_DIR, list_checkpoints
from modelcore.config import ConfigError, RunConfig, TrainConfig
from modelcore.events import EVENTS_FILE
from modelcore.launch import holds_sigterm, launch_command
from webapp.runs import config_paths, transitions
from webapp.runs.models import SUPERVISED_STATUSES, Run, RunStatus
from webapp.runs.services import recover_lost_run
from workers import first_node, ingest, job_processes, slurm, sweep
from workers.jobs import JobRunner, Launch, log_tail, retry_db

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
LAUNCHER_LOG = "launcher.log"
POLL_SECONDS = 0.5
# Sizing the wait for the checkpoint after SIGTERM when train.cancel_grace_s is 0: a
# fixed part (reaching the step boundary, gathering the state) and the bytes written.
CANCEL_GRACE_BASE_SECONDS = 30.0
CHECKPOINT_WRITE_BYTES_PER_SECOND = 100e6
# fp32 weights and AdamW's two fp32 moments.
CHECKPOINT_BYTES_PER_PARAMETER = 12
MAX_CANCEL_GRACE_SECONDS = float(
    next(f for f in dataclasses.fields(TrainConfig) if f.name == "cancel_grace_s").metadata["max"]
)
ERROR_TAIL_CHARS = 12_000

CommandBuilder = Callable[[RunConfig, Path], tuple[list[str], dict[str, str]]]


def default_command(
    config: RunConfig, run_dir: Path, gpu_ids: list[str] | None = None
) -> tuple[list[str], dict[str, str]]:
    """The launcher's argv and environment; ``gpu_ids``: the GPUs leased to this run (workers.gpus)."""
    cap = settings.MAX_CPU_PROCESSES  # the web refuses more at submit; this guards stored configs
    if not gpu_ids:
        return launch_command(config, run_dir, max_cpu_processes=cap)
    argv, env = launch_command(config, run_dir, gpus_available=len(gpu_ids), max_cpu_processes=cap)
    return argv, {**env, "CUDA_VISIBLE_DEVICES": ",".join(gpu_ids)}


def cancel_grace_seconds(config: RunConfig) -> float:
    """How long a stopped trainer may take to checkpoint after SIGTERM before it is killed.

    ``train.cancel_grace_s`` when set; else 30 s plus the checkpoint's bytes (weights
    and optimizer state, from the parameter count) at 100 MB/s: about 30 s for the tiny
    presets, three minutes for a 1B-parameter model.
    """
    if config.train.cancel_grace_s:
        return float(config.train.cancel_grace_s)
    size = config.model.num_params() * CHECKPOINT_BYTES_PER_PARAMETER
    return min(MAX_CANCEL_GRACE_SECONDS, CANCEL_GRACE_BASE_SECONDS + size / CHECKPOINT_WRITE_BYTES_PER_SECOND)


class Supervisor(JobRunner):
    """One training attempt: the trainer's events, its owner and cancel checks, its final state."""

    noun = "trainer"
    runner_name = "supervisor"
    failed_status = RunStatus.FAILED
    time_limit_message = (
        "The run reached the worker's time limit for one launch and was stopped (with a checkpoint "
        "where it managed). Resume it from its last checkpoint to continue."
    )

    def __init__(
        self,
        run: Run,
        *,
        command: CommandBuilder = default_command,
        poll_seconds: float = POLL_SECONDS,
        kill_after: float | None = None,  # None: cancel_grace_seconds(config)
        process_tag: str = "",  # the tag of the trainer's processes (workers.job_processes); made if empty
        heartbeat_seconds: float | None = None,
    ):
        super().__init__(
            tag=process_tag or job_processes.new_tag("run", run.id),
            description=f"run {run.id} attempt {run.attempt}",
            poll_seconds=poll_seconds,
            heartbeat_seconds=float(
                settings.HEARTBEAT_SECONDS if heartbeat_seconds is None else heartbeat_seconds
            ),
            kill_after=kill_after,
        )
        self.run = run
        self.command = command
        self.config: RunConfig | None = None
        self.trainer_status: dict | None = None  # the trainer's last final status event
        self._last_sweep = float("-inf")
        self._events_watch: ingest.EventsWatch | None = None
        # A multi-node run's other nodes, as this first node's supervisor sees them (workers.first_node).
        self.first_node: first_node.FirstNode | None = None

    @property
    def process_tag(self) -> str:
        return self.tag

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def supervise(self) -> str:
        """Run the attempt to its end; returns the final status written."""
        try:
            self.config = RunConfig.from_dict(self.run.config)
            config_paths.check_stored(self.run, self.config)  # the web's path rule, re-checked at launch
        except ConfigError as exc:
            return self.finish(RunStatus.FAILED, f"The stored config does not validate: {exc}")
        if self.kill_after is None:
            self.kill_after = cancel_grace_seconds(self.config)
        if first_node.multi_node(self.config):
            self.first_node = first_node.FirstNode(self.run.id, self.run.attempt)
        if settings.LAUNCHER == "slurm":
            try:
                spec = slurm.job_spec(
                    self.config, name=f"runwright-run-{self.run.id}", stop_grace_s=self.kill_after
                )
            except ValueError as exc:
                return self.finish(RunStatus.FAILED, f"Could not submit the Slurm job: {exc}")
            self.process = slurm.SlurmJob(self.tag, spec)
        return self.run_job()

    # --- the start -------------------------------------------------------------

    def prepare(self) -> Launch:
        assert self.config is not None
        self._set_aside_stale_dir()
        self._read_earlier_attempts_tail()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / CONFIG_FILE).write_text(self.config.to_json() + "\n", encoding="utf-8")
        if isinstance(self.process, slurm.SlurmJob):
            # A lost attempt's job may train on after its supervisor died: never two in one run dir.
            slurm.cancel_earlier_job(self.run.slurm_job_id)
            argv, extra_env = slurm.node_command(self.config, self.run_dir)
        else:
            argv, extra_env = self.command(self.config, self.run_dir)
        header = f"--- attempt {self.run.attempt}: {' '.join(argv)}\n"
        return Launch(
            argv,
            extra_env,
            cwd=self.run_dir,
            log_path=self.run_dir / LAUNCHER_LOG,
            header=header,
            hold_sigterm=holds_sigterm(argv),
        )

    def started(self, pid: int) -> None:
        if isinstance(self.process, slurm.SlurmJob):
            slurm.record_job(self.run.id, self.run.attempt, pid)
            transitions.heartbeat(self.run.id, self.run.attempt)
        else:
            transitions.record_process(self.run.id, self.run.attempt, pid)
        if self.first_node is not None:
            first_node.send_shares(self.run.id, self.run.attempt)

    def _set_aside_stale_dir(self) -> None:
        """A first attempt starts without an event history.

        An events file or checkpoints there belong to another run with the same id (a
        database that was reset, a restored backup): ingesting the one would mix its history
        into this run, and the trainer would resume from the other's weights.
        """
        if self.run.attempt != 1 or self.run.events_offset:
            return
        if (self.run_dir / EVENTS_FILE).exists() or (self.run_dir / CHECKPOINTS_DIR).exists():
            stale = self.run_dir.with_name(f"{self.run_dir.name}.stale-{int(time.time())}")
            self.run_dir.rename(stale)
            log.warning(
                "run %s: set aside files of an earlier run with the same id in %s", self.run.id, stale
            )

    def _read_earlier_attempts_tail(self) -> None:
        """Store what an earlier attempt wrote after the last committed offset before this one appends.

        A lost attempt's supervisor died before reading its trainer's last lines. They are
        the run's history (points, logs, checkpoints), so they go in first; their final
        status, if any, was that attempt's and must not decide this one's.
        """
        if self.run.attempt <= 1 or not (self.run_dir / EVENTS_FILE).exists():
            return
        retry_db(self._ingest_all, f"{self.description}: reading the earlier attempt's last events")
        self.trainer_status = None
        # The checkpoint the trainer will resume from is the folder's latest complete one,
        # which may be newer than the rows the claim saw (a lost attempt's last saves).
        found = list_checkpoints(self.run_dir)
        transitions.record_attempt_checkpoint(self.run.id, self.run.attempt, found[-1][0] if found else None)

    def _ingest_all(self) -> None:
        while self._ingest_batch():
            pass

    # --- each round ------------------------------------------------------------

    def read_events(self) -> None:
        self._ingest_batch()

    def _ingest_batch(self) -> bool:
        """One batch of new events into the database; whether one was stored."""
        run = self.run
        result = ingest.ingest_new_events(run, self.run_dir / EVENTS_FILE)
        if result is None:
            return False
        if result.final_status is not None:
            self.trainer_status = result.final_status
        # A batch refused because the run is not ours (lost, relaunched) was rolled
        # back; the owner check decides what that means, and a revived run re-reads it.
        ingest.announce(run, result)
        if not result.lost_ownership:
            for checkpoint in result.checkpoints:
                offer_checkpoint_to_evals(run.id, int(checkpoint["step"]))
        return not result.lost_ownership

    def wait(self, seconds: float) -> None:
        # Wakes as soon as the trainer appends a line: live pages wait on this tail.
        if self._events_watch is None:
            self._events_watch = ingest.EventsWatch(self.run_dir / EVENTS_FILE)
        self._events_watch.wait(self.run.events_offset, seconds)

    def check(self) -> None:
        run = self.run
        row = Run.objects.filter(pk=run.id).values("status", "attempt", "cancel_requested").first()
        if row is None or row["attempt"] != run.attempt:
            self.request_stop("not-owner")  # deleted, or relaunched: another trainer owns the run dir
            return
        if row["status"] == RunStatus.LOST and transitions.revive(run.id, run.attempt):
            log.warning("run %s was marked lost while this supervisor lives; taken back", run.id)
            run.status = RunStatus.RUNNING
            ingest.announce_status(run)
        elif row["status"] not in SUPERVISED_STATUSES and row["status"] != RunStatus.LOST:
            self.request_stop("not-owner")
        if row["cancel_requested"]:
            self.request_stop("cancel")
        if self.first_node is not None and not self.stop.reason:
            reason = self.first_node.stop_reason()  # a node that failed or went silent stops them all
            if reason:
                self.request_stop(reason)
        changed = self.process.scheduler_state()
        if changed is not None and slurm.record_state(run.id, run.attempt, *changed):
            ingest.announce_status(run)

    def heartbeat(self) -> None:
        # A refused heartbeat (run lost or relaunched) is dealt with by the owner check.
        if transitions.heartbeat(self.run.id, self.run.attempt):
            self._forget_pruned_checkpoints()
        # Busy workers sweep too: with every worker supervising a run, the beat's sweep
        # task could wait in the queue until one of them is free. After our own heartbeat,
        # so that a supervisor back from a database outage never finds its own run stale.
        now = time.monotonic()
        if now - self._last_sweep >= max(5.0, settings.LOST_AFTER_SECONDS / 2):
            sweep.sweep_lost_runs()
            self._last_sweep = now

    def _forget_pruned_checkpoints(self) -> None:
        """Drop the rows of checkpoints that keep-last deleted, so nothing offers them any more."""
        if not (self.run_dir / CHECKPOINTS_DIR).is_dir():
            return  # never checkpointed, or the folder is unreachable: nothing to conclude
        on_disk = {step for step, _ in list_checkpoints(self.run_dir)}
        forgotten = transitions.forget_missing_checkpoints(self.run.id, on_disk)
        if forgotten:
            log.info("run %s: checkpoints of step %s were deleted by keep-last", self.run.id, forgotten)

    # --- the end ---------------------------------------------------------------

    def drain(self) -> None:
        def store_the_rest() -> None:
            # Marked lost by a sweep while we could not reach the database: this supervisor
            # lives and knows how the run ended, so it takes the run back to store its end.
            transitions.revive(self.run.id, self.run.attempt)
            # Everything the trainer wrote before it exited (an outage can leave many
            # batches), torn last line aside.
            while self._ingest_batch():
                pass
            self._forget_pruned_checkpoints()
            changed = self.process.scheduler_state()  # the cluster's last word on the job
            if changed is not None:
                slurm.record_state(self.run.id, self.run.attempt, *changed)

        retry_db(store_the_rest, f"{self.description}: storing the last events")
        if self.first_node is not None:
            # Final only once no node trains on: the others stop now (ours are gone) and are waited for.
            node = self.first_node
            retry_db(
                lambda: node.stop_and_wait(self.kill_after or 0.0),
                f"{self.description}: stopping the other nodes",
            )

    def decide(self, code: int) -> tuple[str, str]:
        reported = (self.trainer_status or {}).get("status")
        if self.stop.reason == "not-owner":
            return (
                RunStatus.LOST,
                "The run was relaunched or deleted elsewhere; this worker stopped its trainer.",
            )
        if self.stop.reason == "shutdown":
            return RunStatus.LOST, (
                "The worker shut down while the run was training; the trainer was stopped "
                "(with a checkpoint where it managed). Resume the run from its last checkpoint."
            )
        if self.stop.reason == "cancel" and reported != RunStatus.COMPLETED:
            if self.stop.killed:
                return RunStatus.CANCELLED, (
                    f"Cancelled on request; the trainer did not stop within {self.kill_after:.0f} s "
                    "of SIGTERM and was killed (no final checkpoint). A model this large may need "
                    "more: raise train.cancel_grace_s."
                )
            return RunStatus.CANCELLED, ""
        if self.first_node is not None:
            own_error = str((self.trainer_status or {}).get("error") or "")
            decided = self.first_node.decide(reported, own_error)
            if decided is not None:
                return decided
            if self.stop.reason == "node-lost":
                return RunStatus.LOST, "A node of the run was lost; every node's share was stopped."
        lost = self.process.lost_reason(reported=reported, stopped=bool(self.stop.reason))
        if lost:
            return RunStatus.LOST, lost  # write_final resumes it with train.max_restarts
        if reported in (RunStatus.COMPLETED, RunStatus.CANCELLED):
            return reported, ""
        if reported == RunStatus.FAILED:
            return RunStatus.FAILED, str(
                self.trainer_status.get("error") or "The trainer reported a failure."
            )
        if isinstance(self.process, slurm.SlurmJob):
            stderr = slurm.job_output_paths(self.run_dir, self.process.job_id)[1]
            return RunStatus.FAILED, (
                f"Slurm job {self.process.job_id} ended {self.process.state} without a final status "
                f"from the trainer. End of {stderr.name}:\n\n" + log_tail(stderr, ERROR_TAIL_CHARS)
            )
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return RunStatus.FAILED, (
            f"The trainer {how} without reporting a final status. End of {LAUNCHER_LOG}:\n\n"
            + launcher_log_tail(self.run_dir / LAUNCHER_LOG)
        )

    def write_final(self, status: str, error: str) -> bool:
        if not transitions.finish(self.run.id, self.run.attempt, status, error):
            return False
        self.run.refresh_from_db()
        ingest.announce_status(self.run)
        if status == RunStatus.LOST:
            if self.first_node is not None:
                self.first_node.release_lost_nodes()  # placed again, away from the lost shares' hosts
            recover_lost_run(self.run.id)  # the worker shut down: another one may resume it
        return True


def supervise(run: Run, *, command: CommandBuilder = default_command, **options) -> str:
    """Supervise the claimed ``run`` (status ``starting``) to its end; returns the final status."""
    return Supervisor(run, command=command, **options).supervise()


def offer_checkpoint_to_evals(run_id: int, step: int) -> None:
    """Let the run's ``eval`` config queue an eval of this checkpoint (idempotent, never raises)."""
    if not apps.is_installed("webapp.evals"):
        return
    from workers.eval_jobs import schedule_periodic_evals

    schedule_periodic_evals(run_id, step)


def launcher_log_tail(path: Path, limit: int = ERROR_TAIL_CHARS) -> str:
    """The end of the launcher's last attempt, starting at the first traceback in it when there is one."""
    # The last attempt only: the log is appended to by every attempt.
    return log_tail(path, limit, section="--- attempt ", missing="(no launcher output)")
