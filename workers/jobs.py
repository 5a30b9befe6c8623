"""One runner for every job that runs the engine as a subprocess (a training run, an eval job).

``JobRunner.run_job`` is the whole life of one start of a job: start the engine with the
worker's own engine on its path, watch it each round without reaping it, heartbeat,
stop it politely then by force, reap everything it started, and write the final
status with one retry policy. A kind of job (``workers.supervisor.Supervisor``,
``workers.eval_jobs.EvalRunner``) says only what differs: how to start it, which
events it reads, what it checks each round, and how it decides the final state.

The guarantees, for every kind of job:

- The subprocess runs in a session of its own and every process of it carries the
  job's tag (``workers.job_processes``): torch elastic starts each rank in a session
  of its own, so the tag, not the process group, is what finds them all. They die
  with the runner (``modelcore.parent_death``), however it dies.
- The leader is never reaped while the job is watched (``waitid`` with ``WNOWAIT``):
  an un-reaped leader keeps its process group id reserved, so signalling the group
  can never hit an unrelated, recycled one. It is reaped only once every tagged
  process is gone, so whatever the job held (GPU leases) is free when it returns.
- A stop (cancel, worker shutdown, time limit, the job lost) sends SIGTERM to the
  ranks, the tagged session leaders, or to the leader's group where there are none;
  not to a launcher with ranks: torch elastic would kill them 30 s after its own
  SIGTERM, mid-checkpoint. After ``kill_after`` seconds, SIGKILL to all of them. An engine
  that handles SIGTERM is started with it blocked (``Launch.hold_sigterm``), ranks included,
  until its handler is set: a stop while it starts is a clean stop, never a death by signal.
- A database that breaks mid-job never stops the job: a round that fails is retried
  next round, and the final status is retried (``retry_db``) before it is left to the
  sweep of silent jobs, which marks the job from its stale heartbeat.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from django.db import DatabaseError, InterfaceError, close_old_connections, connection

import modelcore
from modelcore.parent_death import die_with_parent_preexec
from workers import job_processes

log = logging.getLogger(__name__)

# What the one retry policy retries: OperationalError (a server lost or restarting) is a
# DatabaseError, like the rest of what a write can meet mid-outage; InterfaceError (a
# connection closed under us) is not one, and was missed before this policy.
TRANSIENT_DB_ERRORS = (DatabaseError, InterfaceError)
# How long the end of a job (its last events, its final status) waits for a database that
# is away: a job that finished during an outage shorter than this is stored whole, and
# one longer is left to the sweep of silent jobs (the job's files keep the record).
FINAL_WRITE_PATIENCE_SECONDS = 600.0
RETRY_WAIT_SECONDS = 1.0  # doubled after each failed try, up to MAX_RETRY_WAIT_SECONDS
MAX_RETRY_WAIT_SECONDS = 10.0
T = TypeVar("T")


def refresh_connection() -> None:
    """Replace a broken or expired database connection, as Django does between requests.

    Never inside a transaction (a caller's, or a test's): closing would break it.
    """
    if not connection.in_atomic_block:
        close_old_connections()


def retry_db(
    write: Callable[[], T], what: str, *, patience: float = FINAL_WRITE_PATIENCE_SECONDS
) -> tuple[bool, T | None]:
    """Call ``write`` on a fresh connection until it gets through the database; ``(done, result)``.

    Retries for ``patience`` seconds, waiting longer after each failed try, then gives up
    (logged as an error, never raised: the job's processes are already gone, and the
    sweep of silent jobs ends a job whose runner went quiet).
    """
    deadline = time.monotonic() + patience
    wait = RETRY_WAIT_SECONDS
    tries = 0
    while True:
        tries += 1
        try:
            refresh_connection()
            return True, write()
        except TRANSIENT_DB_ERRORS:
            if time.monotonic() + wait > deadline:
                log.error("gave up %s after %d tries: the database stayed away", what, tries, exc_info=True)
                return False, None
            log.warning(
                "database error while %s (try %d); retrying in %.0f s", what, tries, wait, exc_info=tries == 1
            )
            time.sleep(wait)
            wait = min(2 * wait, MAX_RETRY_WAIT_SECONDS)


def engine_env(extra: dict[str, str], *, defaults: dict[str, str] | None = None) -> dict[str, str]:
    """The subprocess's environment: ours, ``defaults`` under it, ``extra`` over it, our engine on the path.

    The job runs in its own directory; it must import the same engine as the worker does.
    """
    env = {**(defaults or {}), **os.environ, **extra}
    root = str(Path(modelcore.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    return env


def log_tail(path: Path, limit: int, *, section: str = "", missing: str = "(no output)") -> str:
    """The end of a job's output, from the first traceback in it when there is one.

    ``section``: a line prefix that starts each start of the job in a log they all append to;
    only the last section is read.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4 * limit))
            text = f.read().decode("utf-8", errors="replace")
    except FileNotFoundError:
        return missing
    if section and section in text:
        text = text[text.rfind(section) :]
    start = text.find("Traceback (most recent call last)")
    if start >= 0:
        text = text[start:]
    return text[-limit:]


@dataclass(frozen=True)
class Launch:
    """How to start one job: its argv, environment additions, folder and log."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path
    log_path: Path
    header: str = ""  # written to the log before the job's output; with it, the log is appended to
    env_defaults: dict[str, str] = field(default_factory=dict)  # under the worker's own environment
    # Start it with SIGTERM blocked: its engine unblocks it once its stop handler is set
    # (``modelcore.launch.holds_sigterm``), so a stop that comes while it starts is never fatal.
    hold_sigterm: bool = False


class JobHandle(ABC):
    """What the runner starts, watches, stops and reaps: a local process group or a cluster job.

    ``JobProcess`` runs the job as subprocesses of this host; ``workers.slurm.SlurmJob`` hands
    it to Slurm. The runner's watch, stop, reap and final-write steps see only this.
    """

    tag: str

    @abstractmethod
    def start(self, launch: Launch, description: str) -> int:
        """Start the job; returns its id (a pid, a Slurm job id)."""

    @abstractmethod
    def exited(self) -> bool:
        """Whether the job has ended (without releasing what identifies it)."""

    @abstractmethod
    def terminate(self) -> None:
        """Ask the job to stop: SIGTERM to its ranks, which checkpoint and exit."""

    def terminate_late_starters(self) -> None:
        """While stopping, each round: SIGTERM to ranks that started after the first ``terminate``."""
        return None

    @abstractmethod
    def kill_all(self) -> bool:
        """Kill everything of the job; whether all of it is gone."""

    @abstractmethod
    def reap(self) -> int:
        """Kill what is left, wait for the job's end; its exit code (negative: the signal)."""

    def lost_reason(self, *, reported: str | None, stopped: bool) -> str:
        """Why the job's end counts as lost (the cluster ended it), or "" (``reported``: the job's own final status)."""
        return ""

    def scheduler_state(self) -> tuple[str, str] | None:
        """A cluster scheduler's ``(state, reason)`` when it changed since the last call; None otherwise."""
        return None

    def stop(self, grace: float) -> int:
        """SIGTERM, up to ``grace`` seconds for it to exit, then whatever is left is killed and reaped."""
        if not self.exited():
            self.terminate()
            deadline = time.monotonic() + grace
            while not self.exited() and time.monotonic() < deadline:
                time.sleep(0.1)
        return self.reap()


class JobProcess(JobHandle):
    """The subprocess of one job and every process it starts, found by the job's tag."""

    def __init__(self, tag: str):
        self.tag = tag
        self.proc: subprocess.Popen | None = None
        self.signalled: set[int] = set()  # pids that got the SIGTERM

    def start(self, launch: Launch, description: str) -> int:
        env = engine_env({**launch.env, **job_processes.job_env(self.tag)}, defaults=launch.env_defaults)
        with open(launch.log_path, "ab" if launch.header else "wb") as out:
            if launch.header:
                out.write(launch.header.encode())
                out.flush()
            # The child gets its own copy of the descriptor; ours closes with the block.
            # It dies with this thread, which lives as long as the job (it waits for it).
            self.proc = subprocess.Popen(
                launch.argv,
                cwd=launch.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_preexec(hold_sigterm=launch.hold_sigterm),
            )
        job_processes.record_job(self.tag, self.proc.pid, description)
        return self.proc.pid

    def exited(self) -> bool:
        """Whether the leader exited, without reaping it (its group id stays reserved)."""
        assert self.proc is not None
        if self.proc.returncode is not None:
            return True
        try:
            info = os.waitid(os.P_PID, self.proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        return info is not None

    def signal_group(self, sig: int) -> None:
        assert self.proc is not None
        if self.proc.returncode is not None:
            return  # reaped: its group id may belong to someone else now
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def terminate(self) -> None:
        """SIGTERM to each rank's session, or to the leader's where it is the only one.

        The ranks are the tagged session leaders besides the leader. With ranks started,
        the leader (a launcher) is left alone: they checkpoint and exit, and it exits with
        them. Called again while stopping, it signals only those that have not had it yet.
        """
        assert self.proc is not None
        ranks = [
            p.pid
            for p in job_processes.tagged_processes(self.tag)
            if p.pid != self.proc.pid and _session_leader(p.pid)
        ]
        targets = [pid for pid in ranks or [self.proc.pid] if pid not in self.signalled]
        for pid in targets:
            if pid == self.proc.pid:
                self.signal_group(signal.SIGTERM)
            else:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
        self.signalled.update(targets)

    def terminate_late_starters(self) -> None:
        assert self.proc is not None
        if self.signalled == {self.proc.pid}:
            # SIGTERM went to the launcher before its ranks started: ranks it started
            # meanwhile would run on unasked; they get theirs now.
            self.terminate()

    def kill_all(self) -> bool:
        """SIGKILL the leader's group and every tagged process; returns whether all are gone."""
        self.signal_group(signal.SIGKILL)
        return job_processes.kill_tagged(self.tag)

    def reap(self) -> int:
        """Kill what is left (workers of a crashed rank, ranks of a killed launcher), then reap.

        Returns the leader's exit code once no process of the job is left.
        """
        assert self.proc is not None
        if not self.kill_all():
            log.error("processes tagged %s survived SIGKILL", self.tag)
        code = self.proc.wait()
        job_processes.forget_job(self.tag)
        return code


@dataclass
class Stop:
    """Why the runner is stopping the job, and when it sent SIGTERM."""

    reason: str = ""  # "cancel", "shutdown", "timeout", "not-owner", "interrupted"
    sent_at: float | None = None
    killed: bool = False  # SIGKILL came after the grace period


class JobRunner(ABC):
    """Runs one start of a job to its final status; a kind of job overrides the hooks below."""

    noun = "job"  # what the subprocess is called in messages: "trainer", "evaluator"
    runner_name = "job runner"  # what this runner is called in messages: "supervisor"
    failed_status = "failed"
    # The final error when Celery's soft time limit stops the runner.
    time_limit_message = "The job reached the worker's time limit and was stopped."

    def __init__(
        self,
        *,
        tag: str,
        description: str,
        poll_seconds: float,
        heartbeat_seconds: float,
        kill_after: float | None,
        time_limit: float | None = None,
        process: JobHandle | None = None,
    ):
        self.process: JobHandle = process or JobProcess(tag)
        self.description = description  # "run 12 attempt 3", "eval job 5": logs and job records
        self.poll_seconds = poll_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.kill_after = kill_after
        self.time_limit = time_limit
        self.stop = Stop()
        self._last_heartbeat = float("-inf")
        self._round_failed = False  # the last round met a database error

    @property
    def proc(self) -> subprocess.Popen | None:
        """The local subprocess (None for a job a cluster scheduler runs)."""
        return getattr(self.process, "proc", None)

    @proc.setter
    def proc(self, value: subprocess.Popen | None) -> None:
        self.process.proc = value

    @property
    def tag(self) -> str:
        return self.process.tag

    # --- what a kind of job says --------------------------------------------------
    # prepare, decide and write_final are each kind's own; the other hooks do nothing
    # unless a kind of job has something to do at that point.

    @abstractmethod
    def prepare(self) -> Launch:
        """Everything before the start (folders, files, the command); OSError/ValueError fail the job."""

    def started(self, pid: int) -> None:
        """Record the started process on the job's row."""
        return None

    def read_events(self) -> None:
        """Read what the job wrote since the last round (every round, and once more after its exit)."""
        return None

    def check(self) -> None:
        """While it runs, each round: ownership and cancel requests (call ``request_stop``)."""
        return None

    def heartbeat(self) -> None:
        """While it runs, every ``heartbeat_seconds``: tell the database the job is alive."""
        return None

    def drain(self) -> None:
        """After every process is gone: what the job wrote last."""
        return None

    def wait(self, seconds: float) -> None:
        """Between rounds: ``seconds``, or less when the job has written something new."""
        time.sleep(seconds)

    @abstractmethod
    def decide(self, code: int) -> tuple[str, str]:
        """The final status and its error message, from the exit code, the events and the stop."""

    @abstractmethod
    def write_final(self, status: str, error: str) -> bool:
        """Write the final status (a conditional move); False when the job is no longer this runner's."""

    def interrupted_message(self, exc: BaseException) -> str:
        from celery.exceptions import SoftTimeLimitExceeded

        if isinstance(exc, SoftTimeLimitExceeded):
            return self.time_limit_message
        return (
            f"The {self.runner_name} stopped unexpectedly ({type(exc).__name__}: {exc}); "
            f"the {self.noun} was stopped."
        )

    # --- the life of the job ------------------------------------------------------

    def run_job(self) -> str:
        """Start, watch, stop and reap the job; returns the final status written."""
        try:
            launch = self.prepare()
            pid = self.process.start(launch, self.description)
            self.started(pid)
        except (OSError, ValueError) as exc:
            return self.finish(self.failed_status, f"Could not start the {self.noun}: {exc}")
        log.info("%s: started %s: %s", self.description, pid, " ".join(map(str, launch.argv)))
        # Held until the final status is written: in a prefork child the handler it
        # replaces (billiard's) would exit at once, leaving the job "running".
        previous = self._install_shutdown_handler()
        try:
            try:
                self._watch()
            except BaseException as exc:
                # Whatever stops us (a time limit, a bug, a database that stays down),
                # the job must not outlive its runner unobserved.
                self.stop.reason = self.stop.reason or "interrupted"
                self.process.stop(self.kill_after or 0.0)
                self.finish(self.failed_status, self.interrupted_message(exc))
                raise
            code = self.process.reap()
            self.drain()
            return self.finish(*self.decide(code))
        finally:
            self._restore_shutdown_handler(previous)

    def _watch(self) -> None:
        deadline = time.monotonic() + self.time_limit if self.time_limit is not None else None
        while True:
            exited = self.process.exited()
            self._tick(final=exited)
            if exited:
                return
            if deadline is not None and time.monotonic() >= deadline:
                self.request_stop("timeout")
            if self._round_failed:
                time.sleep(self.poll_seconds)  # events wait unread while the database is away
            else:
                self.wait(self.poll_seconds)

    def _tick(self, *, final: bool) -> None:
        """One round: read new events, then (while the job lives) checks, heartbeat, escalation."""
        self._round_failed = False
        refresh_connection()
        try:
            self.read_events()
            if final:
                return
            self.check()
            now = time.monotonic()
            if now - self._last_heartbeat >= self.heartbeat_seconds:
                self.heartbeat()
                self._last_heartbeat = now
        except TRANSIENT_DB_ERRORS:
            # A database outage must not stop the job; what it wrote is read again next round.
            log.warning("%s: database error, retrying next round", self.description, exc_info=True)
            self._round_failed = True
        self._escalate()

    def request_stop(self, reason: str) -> None:
        """Ask the job to stop (SIGTERM now, SIGKILL ``kill_after`` seconds later); the first reason wins."""
        if self.stop.sent_at is not None:
            return
        log.info(
            "%s: stopping the %s (%s); it has %.0f s to exit",
            self.description,
            self.noun,
            reason,
            self.kill_after,
        )
        self.stop.reason = reason
        self.stop.sent_at = time.monotonic()
        self.process.terminate()

    def _escalate(self) -> None:
        if self.stop.sent_at is None or self.stop.killed or self.process.exited():
            return
        self.process.terminate_late_starters()
        if time.monotonic() - self.stop.sent_at >= self.kill_after:
            log.warning(
                "%s: %s still alive %.0f s after SIGTERM; killing",
                self.description,
                self.noun,
                self.kill_after,
            )
            self.process.kill_all()
            self.stop.killed = True

    def finish(self, status: str, error: str) -> str:
        """Write the final status with the one retry policy; returns ``status``."""
        done, written = retry_db(lambda: self.write_final(status, error), f"{self.description}: final status")
        if done and not written:
            log.info("%s: not this runner's any more; final status %s not written", self.description, status)
        log.info("%s: %s", self.description, status)
        return status

    # --- worker shutdown ----------------------------------------------------------

    def _install_shutdown_handler(self):
        # Signals can only be handled on the main thread (Celery's prefork child
        # runs tasks there; tests may run jobs from another thread).
        if threading.current_thread() is not threading.main_thread():
            return None

        def on_term(signum, frame):
            self.request_stop("shutdown")

        return signal.signal(signal.SIGTERM, on_term)

    def _restore_shutdown_handler(self, previous) -> None:
        if previous is None:
            return
        signal.signal(signal.SIGTERM, previous)
        # The SIGTERM was also meant for whoever handled it before us: with ``--pool
        # solo`` that is Celery's warm shutdown, so pass it on now that the job is final.
        # Not billiard's handler in a prefork child: it only exits the child, which the
        # pool's own shutdown does anyway, without a lost-worker error.
        if (
            self.stop.reason == "shutdown"
            and callable(previous)
            and not getattr(previous, "__module__", "").startswith("billiard")
        ):
            previous(signal.SIGTERM, None)


def _child_preexec(*, hold_sigterm: bool) -> Callable[[], None] | None:
    """The job's ``preexec_fn``: it dies with this thread, and with ``hold_sigterm`` starts with SIGTERM blocked.

    A blocked mask survives ``exec`` and is inherited by every process the job starts: a
    launcher's ranks start with it too. A SIGTERM sent before a rank's handler exists stays
    pending until the rank unblocks it (``modelcore.train``), where it would otherwise kill
    the rank (exit -15) before it could checkpoint or report.
    """
    die = die_with_parent_preexec()
    if not hold_sigterm:
        return die

    def preexec() -> None:
        if die is not None:
            die()
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    return preexec


def _session_leader(pid: int) -> bool:
    try:
        return os.getsid(pid) == pid
    except OSError:
        return False
