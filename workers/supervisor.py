"""Runs one training attempt: start the trainer, tail its events into the database, stop it.

The trainer runs as a subprocess in its own session, and a torch crash never
takes the worker down. Every process of it carries the attempt's tag
(``workers.job_processes``): torch elastic starts each rank in a session of its
own, so the tag, not the process group, is what finds them all. They die with
the supervisor (``modelcore.parent_death``), however it dies.

The supervisor owns the run's row while it runs: it ingests ``events.jsonl``
from the committed byte offset, refreshes the heartbeat (on the database's
clock), drops checkpoints that keep-last deleted from disk, watches
``cancel_requested`` and, once every process of the trainer is gone, writes the
final status. A run is only ever shown final when its processes are gone.

A stop (cancel, worker shutdown, time limit) sends SIGTERM to the ranks, which
checkpoint and exit, and waits ``train.cancel_grace_s`` (sized from the
checkpoint's bytes by default) before SIGKILL. Not to the launcher: torch
elastic would kill its ranks 30 s after its own SIGTERM, mid-checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection

import modelcore
from modelcore.checkpoint_layout import CHECKPOINTS_DIR, list_checkpoints
from modelcore.config import ConfigError, RunConfig, TrainConfig
from modelcore.events import EVENTS_FILE
from modelcore.parent_death import die_with_parent_preexec
from webapp.runs import config_paths, transitions
from webapp.runs.models import Run, RunStatus
from workers import ingest, job_processes

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
    # Imported here: the web imports workers.tasks to enqueue, and must not pay for the launcher.
    from modelcore.launch import launch_command

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


@dataclass
class _Stop:
    """Why the supervisor is stopping the trainer, and when it sent SIGTERM."""

    reason: str = ""  # "cancel", "shutdown", "not-owner", "interrupted"
    sent_at: float | None = None
    killed: bool = False
    signalled: set[int] = field(default_factory=set)  # pids that got the SIGTERM


@dataclass
class Supervisor:
    run: Run
    command: CommandBuilder = default_command
    poll_seconds: float = POLL_SECONDS
    kill_after: float | None = None  # None: cancel_grace_seconds(config)
    process_tag: str = ""  # the tag of the trainer's processes (workers.job_processes); made if empty
    heartbeat_seconds: float = field(default_factory=lambda: float(settings.HEARTBEAT_SECONDS))
    proc: subprocess.Popen | None = None
    stop: _Stop = field(default_factory=_Stop)
    trainer_status: dict | None = None  # the trainer's last final status event
    _last_heartbeat: float = 0.0
    _last_sweep: float = 0.0

    @property
    def run_dir(self) -> Path:
        return self.run.run_dir

    def supervise(self) -> str:
        """Run the attempt to its end; returns the final status written."""
        try:
            config = RunConfig.from_dict(self.run.config)
            config_paths.check_stored(self.run, config)  # the web's path rule, re-checked at launch
        except ConfigError as exc:
            return self._finish(RunStatus.FAILED, f"The stored config does not validate: {exc}")
        if self.kill_after is None:
            self.kill_after = cancel_grace_seconds(config)
        self.process_tag = self.process_tag or job_processes.new_tag("run", self.run.id)
        try:
            self._set_aside_stale_dir()
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / CONFIG_FILE).write_text(config.to_json() + "\n", encoding="utf-8")
            argv, extra_env = self.command(config, self.run_dir)
            self._start(argv, extra_env)
        except (OSError, ValueError) as exc:
            return self._finish(RunStatus.FAILED, f"Could not start the trainer: {exc}")
        # Held until the final status is written: in a prefork child the handler
        # it replaces (billiard's) would exit at once, leaving the run "running".
        previous = self._install_shutdown_handler()
        try:
            try:
                self._loop()
            except BaseException as exc:
                # Whatever stops us (a time limit, a bug, a database that stays down),
                # the trainer must not outlive its supervisor unobserved.
                self.stop.reason = self.stop.reason or "interrupted"
                self._terminate_and_wait()
                self._finish(RunStatus.FAILED, _interrupted_message(exc))
                raise
            return self._final()
        finally:
            self._restore_shutdown_handler(previous)

    def _set_aside_stale_dir(self) -> None:
        """A first attempt starts without an event history.

        An events file there belongs to another run with the same id (a database that was
        reset, a restored backup); ingesting it would mix its history into this run.
        """
        if self.run.attempt != 1 or self.run.events_offset:
            return
        if (self.run_dir / EVENTS_FILE).exists():
            stale = self.run_dir.with_name(f"{self.run_dir.name}.stale-{int(time.time())}")
            self.run_dir.rename(stale)
            log.warning(
                "run %s: set aside files of an earlier run with the same id in %s", self.run.id, stale
            )

    # --- the process -----------------------------------------------------------

    def _start(self, argv: list[str], extra_env: dict[str, str]) -> None:
        env = {**os.environ, **extra_env, **job_processes.job_env(self.process_tag)}
        # The trainer runs in the run directory; it must import the same engine as we do.
        root = str(Path(modelcore.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        with open(self.run_dir / LAUNCHER_LOG, "ab") as out:
            out.write(f"--- attempt {self.run.attempt}: {' '.join(argv)}\n".encode())
            out.flush()
            # The child gets its own copy of the descriptor; ours closes with the block.
            # It dies with this thread, which lives as long as the run (it waits for it).
            self.proc = subprocess.Popen(
                argv,
                cwd=self.run_dir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent_preexec(),
            )
        job_processes.record_job(
            self.process_tag, self.proc.pid, f"run {self.run.id} attempt {self.run.attempt}"
        )
        transitions.record_process(self.run.id, self.run.attempt, self.proc.pid)
        log.info("run %s attempt %s: started pid %s", self.run.id, self.run.attempt, self.proc.pid)

    def _exited(self) -> bool:
        """Whether the launcher exited, without reaping it.

        The un-reaped (zombie) leader keeps its process group id reserved, so
        the stragglers of the group can still be killed by that id afterwards
        without any risk of signalling an unrelated, recycled group.
        """
        assert self.proc is not None
        if self.proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def _signal_group(self, sig: int) -> None:
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def _signal_ranks(self) -> None:
        """SIGTERM to each rank's session, or to the launcher's where it is the only trainer.

        The ranks are the tagged session leaders besides the launcher (torch elastic
        starts each in a session of its own). With ranks started, the launcher is left
        alone: they checkpoint and exit, and it exits with them. Before they start (or
        with one process, which is the launcher itself) the launcher's group gets it.
        Called again while stopping, it signals only ranks that have not had it yet.
        """
        assert self.proc is not None
        ranks = [
            p.pid
            for p in job_processes.tagged_processes(self.process_tag)
            if p.pid != self.proc.pid and _session_leader(p.pid)
        ]
        targets = [pid for pid in ranks or [self.proc.pid] if pid not in self.stop.signalled]
        for pid in targets:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        self.stop.signalled.update(targets)

    def _kill_all(self) -> bool:
        """SIGKILL the launcher's group and every tagged process; returns whether all are gone."""
        self._signal_group(signal.SIGKILL)
        return job_processes.kill_tagged(self.process_tag)

    def _reap(self) -> int:
        """Kill what is left (workers of a crashed rank, ranks of a killed launcher), then reap.

        Returns the launcher's exit code once no process of the trainer is left, so the
        GPU lease (released after this) is never handed on while they still run.
        """
        assert self.proc is not None
        if not self._kill_all():
            log.error("run %s: processes tagged %s survived SIGKILL", self.run.id, self.process_tag)
        code = self.proc.wait()
        job_processes.forget_job(self.process_tag)
        return code

    def _terminate_and_wait(self) -> None:
        if self.proc is None:
            return
        if not self._exited():
            self._signal_ranks()
            deadline = time.monotonic() + self.kill_after
            while not self._exited() and time.monotonic() < deadline:
                time.sleep(0.1)
        self._reap()

    # --- the loop --------------------------------------------------------------

    def _loop(self) -> None:
        # Wakes as soon as the trainer appends a line: live pages wait on this tail.
        watch = ingest.EventsWatch(self.run_dir / EVENTS_FILE)
        while True:
            exited = self._exited()
            self._tick(final=exited)
            if exited:
                return
            watch.wait(self.run.events_offset, self.poll_seconds)

    def _tick(self, *, final: bool) -> None:
        """One round: ingest new events, then (while the trainer lives) heartbeat and cancel."""
        _refresh_connection()
        try:
            self._ingest()
            if final:
                return
            self._check_owner_and_cancel()
            self._heartbeat_and_sweep()
        except DatabaseError:
            # A database outage must not stop training (DESIGN: the run dir is the
            # record); the offset is only advanced by a commit, so nothing is lost.
            log.warning("run %s: database error, retrying next round", self.run.id, exc_info=True)
        self._escalate()

    def _ingest(self) -> None:
        result = ingest.ingest_new_events(self.run, self.run_dir / EVENTS_FILE)
        if result is None:
            return
        if result.final_status is not None:
            self.trainer_status = result.final_status
        # A batch refused because the run is not ours (lost, relaunched) was rolled
        # back; the owner check decides what that means, and a revived run re-reads it.
        ingest.announce(self.run, result)
        if not result.lost_ownership:
            for checkpoint in result.checkpoints:
                offer_checkpoint_to_evals(self.run.id, int(checkpoint["step"]))

    def _check_owner_and_cancel(self) -> None:
        row = Run.objects.filter(pk=self.run.id).values("status", "attempt", "cancel_requested").first()
        if row is None or row["attempt"] != self.run.attempt:
            self._request_stop("not-owner")  # deleted, or relaunched: another trainer owns the run dir
            return
        if row["status"] == RunStatus.LOST and transitions.revive(self.run.id, self.run.attempt):
            log.warning("run %s was marked lost while this supervisor lives; taken back", self.run.id)
            self.run.status = RunStatus.RUNNING
            ingest.announce_status(self.run)
        elif row["status"] not in transitions.SUPERVISED_STATUSES and row["status"] != RunStatus.LOST:
            self._request_stop("not-owner")
        if row["cancel_requested"]:
            self._request_stop("cancel")

    def _heartbeat_and_sweep(self) -> None:
        now = time.monotonic()
        if now - self._last_heartbeat >= self.heartbeat_seconds:
            # A refused heartbeat (run lost or relaunched) is dealt with by the owner check.
            if transitions.heartbeat(self.run.id, self.run.attempt):
                self._forget_pruned_checkpoints()
            self._last_heartbeat = now
        # Busy workers sweep too: with every worker supervising a run, the beat's
        # sweep task could wait in the queue until one of them is free.
        if now - self._last_sweep >= max(5.0, settings.LOST_AFTER_SECONDS / 2):
            from workers.sweep import sweep_lost_runs

            sweep_lost_runs()
            self._last_sweep = now

    def _request_stop(self, reason: str) -> None:
        if self.stop.sent_at is not None:
            return
        log.info(
            "run %s: stopping the trainer (%s); it has %.0f s to checkpoint",
            self.run.id,
            reason,
            self.kill_after,
        )
        self.stop.reason = reason
        self.stop.sent_at = time.monotonic()
        self._signal_ranks()

    def _escalate(self) -> None:
        if self.stop.sent_at is None or self.stop.killed or self._exited():
            return
        if self.stop.signalled == {self.proc.pid}:
            # SIGTERM went to the launcher before its ranks started: ranks it started
            # meanwhile would train on unasked; they get theirs now.
            self._signal_ranks()
        if time.monotonic() - self.stop.sent_at >= self.kill_after:
            log.warning(
                "run %s: trainer still alive %.0f s after SIGTERM; killing", self.run.id, self.kill_after
            )
            self._kill_all()
            self.stop.killed = True

    def _forget_pruned_checkpoints(self) -> None:
        """Drop the rows of checkpoints that keep-last deleted, so nothing offers them any more."""
        if not (self.run_dir / CHECKPOINTS_DIR).is_dir():
            return  # never checkpointed, or the folder is unreachable: nothing to conclude
        on_disk = {step for step, _ in list_checkpoints(self.run_dir)}
        forgotten = transitions.forget_missing_checkpoints(self.run.id, on_disk)
        if forgotten:
            log.info("run %s: checkpoints of step %s were deleted by keep-last", self.run.id, forgotten)

    # --- the end ---------------------------------------------------------------

    def _final(self) -> str:
        code = self._reap()
        # Everything the trainer wrote before it exited, torn last line aside.
        for _ in range(3):
            try:
                _refresh_connection()
                self._ingest()
                break
            except DatabaseError:
                log.warning("run %s: database error while draining events", self.run.id, exc_info=True)
                time.sleep(1.0)
        with contextlib.suppress(DatabaseError):
            self._forget_pruned_checkpoints()
        status, error = self._decide(code)
        return self._finish(status, error)

    def _decide(self, code: int) -> tuple[str, str]:
        reported = (self.trainer_status or {}).get("status")
        if self.stop.reason == "not-owner":
            return (
                RunStatus.LOST,
                "The run was relaunched or deleted elsewhere; this worker stopped its trainer.",
            )
        if self.stop.reason == "shutdown":
            return (
                RunStatus.LOST,
                "The worker shut down while the run was training; the trainer was stopped "
                "(with a checkpoint where it managed). Resume the run from its last checkpoint.",
            )
        if self.stop.reason == "cancel" and reported != RunStatus.COMPLETED:
            if self.stop.killed:
                return RunStatus.CANCELLED, (
                    f"Cancelled on request; the trainer did not stop within {self.kill_after:.0f} s "
                    "of SIGTERM and was killed (no final checkpoint). A model this large may need "
                    "more: raise train.cancel_grace_s."
                )
            return RunStatus.CANCELLED, ""
        if reported in (RunStatus.COMPLETED, RunStatus.CANCELLED):
            return reported, ""
        if reported == RunStatus.FAILED:
            return RunStatus.FAILED, str(
                self.trainer_status.get("error") or "The trainer reported a failure."
            )
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return RunStatus.FAILED, (
            f"The trainer {how} without reporting a final status. End of {LAUNCHER_LOG}:\n\n"
            + launcher_log_tail(self.run_dir / LAUNCHER_LOG)
        )

    def _finish(self, status: str, error: str) -> str:
        for _ in range(5):
            try:
                _refresh_connection()
                if transitions.finish(self.run.id, self.run.attempt, status, error):
                    self.run.refresh_from_db()
                    ingest.announce_status(self.run)
                else:
                    log.info("run %s: not ours any more; final status %s not written", self.run.id, status)
                break
            except DatabaseError:
                log.warning("run %s: database error writing the final status", self.run.id, exc_info=True)
                time.sleep(1.0)
        log.info("run %s attempt %s: %s", self.run.id, self.run.attempt, status)
        return status

    # --- worker shutdown -------------------------------------------------------

    def _install_shutdown_handler(self):
        # Signals can only be handled on the main thread (Celery's prefork child
        # runs tasks there; tests may supervise from another thread).
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_term(signum, frame):
            self._request_stop("shutdown")

        return signal.signal(signal.SIGTERM, on_term)

    def _restore_shutdown_handler(self, previous) -> None:
        if previous is None:
            return
        signal.signal(signal.SIGTERM, previous)
        # The SIGTERM was also meant for whoever handled it before us: with
        # ``--pool solo`` that is Celery's warm shutdown, so pass it on now that the
        # run is final. Not billiard's handler in a prefork child: it only exits the
        # child, which the pool's own shutdown does anyway, without a lost-worker error.
        if (
            self.stop.reason == "shutdown"
            and callable(previous)
            and not getattr(previous, "__module__", "").startswith("billiard")
        ):
            previous(signal.SIGTERM, None)


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
    """The end of the launcher's output, starting at the first traceback in it when there is one."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 4 * limit))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return "(no launcher output)"
    # The last attempt only: the log is appended to by every attempt.
    text = text[text.rfind("--- attempt ") :] if "--- attempt " in text else text
    start = text.find("Traceback (most recent call last)")
    if start >= 0:
        text = text[start:]
    return text[-limit:] if len(text) > limit else text


def _session_leader(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False


def _refresh_connection() -> None:
    """Replace a broken or expired database connection, as Django does between requests.

    Never inside a transaction (a caller's, or a test's): closing would break it.
    """
    if not connection.in_atomic_block:
        close_old_connections()


def _interrupted_message(exc: BaseException) -> str:
    from celery.exceptions import SoftTimeLimitExceeded

    if isinstance(exc, SoftTimeLimitExceeded):
        return (
            "The run reached the worker's time limit for one launch and was stopped (with a checkpoint "
            "where it managed). Resume it from its last checkpoint to continue."
        )
    return f"The supervisor stopped unexpectedly ({type(exc).__name__}: {exc}); the trainer was stopped."
