"""What every process job that is not a run shares on workers: an eval job, a sampling or export job.

The process side (start, watch, stop, reap, the final write's retries) is ``workers.jobs``'s
``JobRunner``, as for a trainer. On top of it such a job is one row
(``webapp.process_jobs.ProcessJobRows``) and one engine that prints JSON lines into its log;
``ProcessJobRunner`` reads those lines, records the process, and decides the end a cancel,
a time limit, a worker shutdown or a failed engine make. ``process_job_tasks`` declares the
kind's three Celery tasks: run one job (claimed first; a second delivery finds it claimed,
so it acknowledges late), fail jobs whose worker went silent, and re-send jobs queued too
long. A kind (``workers.eval_jobs``, ``workers.sample_jobs``) says only what differs: its
command, what its events mean, what it stores while it runs and how a clean exit ends.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
from abc import abstractmethod
from typing import Any

from celery import shared_task
from django.conf import settings

from webapp.lifecycle import CANCELLED, FAILED
from webapp.process_jobs import ProcessJobRows
from workers import job_processes
from workers.jobs import JobRunner, log_tail

KILL_AFTER_SECONDS = 5.0
ERROR_TAIL_CHARS = 8000


class ProcessJobRunner(JobRunner):
    """One start of a process job: the engine's JSON lines, cancel and time limit, its end."""

    # What a kind declares: its row writes (its ``transitions.JOBS``), its name in its tasks'
    # names ("eval": ``run_eval_job``), its time limit and the grace Celery's limits add to it,
    # how often it reads the engine's output and heartbeats.
    rows: ProcessJobRows
    kind: str
    time_limit_seconds: float
    stop_grace_seconds: float
    poll_interval: float
    heartbeat_interval: float
    work = "job"  # what ran past its time limit: "The evaluation ran past ..."
    timeout_advice = ""  # said after the time limit message: how to fit in it

    def __init__(
        self, job: Any, *, time_limit: float | None = None, poll_seconds: float | None = None, label: str = ""
    ):
        label = label or self.kind  # names its processes and its log lines: "export job 7"
        super().__init__(
            tag=job_processes.new_tag(label, job.id),
            description=f"{label} job {job.id}",
            poll_seconds=poll_seconds if poll_seconds is not None else self.poll_interval,
            heartbeat_seconds=self.heartbeat_interval,
            kill_after=KILL_AFTER_SECONDS,
            time_limit=float(time_limit if time_limit is not None else self.time_limit_seconds),
        )
        self.job = job
        self.engine_error = ""  # the engine's own "error" event, better than its log's tail
        self._offset = 0
        self._partial = b""

    def started(self, pid: int) -> None:
        self.rows.record_process(self.job.id, pid)

    def read_events(self) -> None:
        """The engine's JSON lines in its log (stdout and stderr together) since the last round."""
        try:
            with open(self.job.log_file, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
        except FileNotFoundError:
            return
        self._offset += len(chunk)
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()  # an incomplete last line waits for its end
        for line in lines:
            line = line.strip()
            if not line.startswith(b"{"):
                continue  # a library's own output between the events
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            if event.get("event") == "error":
                self.engine_error = str(event.get("error", ""))
            else:
                self.on_event(event)
        self.events_read()

    def on_event(self, event: dict[str, Any]) -> None:
        """One event of the engine's other than ``error``."""

    def events_read(self) -> None:
        """After each round's events: store what changed (a heartbeat may come later)."""
        return None

    def decide(self, code: int) -> tuple[str, str]:
        if self.stop.reason == "cancel":
            return CANCELLED, ""
        if self.stop.reason == "timeout":
            limit = f"The {self.work} ran past its time limit ({self.time_limit:.0f} s) and was stopped."
            return FAILED, f"{limit} {self.timeout_advice}".strip()
        if self.stop.reason == "shutdown":
            return FAILED, "The worker shut down while the job ran; start the job again."
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = log_tail(self.job.log_file, ERROR_TAIL_CHARS, missing=f"(no {self.noun} output)")
            return FAILED, f"The {self.noun} {how}.\n\n{self.engine_error or tail}"
        return self.decide_exit()

    @abstractmethod
    def decide_exit(self) -> tuple[str, str]:
        """The final status and error of an engine that exited 0 (its output may still be missing)."""


def process_job_tasks(module: str, runner: type[ProcessJobRunner]) -> tuple[Any, Any, Any]:
    """The kind's tasks ``<module>.run_<kind>_job``, ``sweep_stale_<kind>_jobs``, ``resend_queued_<kind>_jobs``.

    Their names are what the web sends (``webapp.enqueue``) and beat schedules: renaming one
    breaks queued messages.
    """
    log = logging.getLogger(module)
    rows, kind = runner.rows, runner.kind
    time_limit, stop_grace = runner.time_limit_seconds, runner.stop_grace_seconds

    @shared_task(
        bind=True,
        name=f"{module}.run_{kind}_job",
        ignore_result=True,
        # Safe: a second delivery finds the job claimed (ProcessJobRows.claim).
        acks_late=True,
        soft_time_limit=time_limit + stop_grace,
        time_limit=time_limit + 2 * stop_grace,
    )
    def run_job(self, job_id: int) -> str | None:
        """Claim the queued job and run it to its end; a job not queued is left alone."""
        worker = getattr(self.request, "hostname", None) or socket.gethostname()
        job = rows.claim(job_id, worker)
        if job is None:
            log.info("%s %s is not queued (claimed, cancelled or deleted); nothing to do", rows.noun, job_id)
            return None
        return runner(job).run_job()

    @shared_task(
        name=f"{module}.sweep_stale_{kind}_jobs", ignore_result=True, soft_time_limit=30, time_limit=60
    )
    def sweep_stale_jobs() -> list[int]:
        """Fail running jobs whose worker stopped heartbeating (on the beat schedule)."""
        return rows.fail_stale_jobs(float(settings.LOST_AFTER_SECONDS))

    @shared_task(
        name=f"{module}.resend_queued_{kind}_jobs", ignore_result=True, soft_time_limit=30, time_limit=60
    )
    def resend_queued_jobs() -> list[int]:
        """Send the task of jobs queued for longer than ``REQUEUE_AFTER_SECONDS`` again."""
        due = rows.jobs_to_resend(dt.timedelta(seconds=settings.REQUEUE_AFTER_SECONDS))
        for job_id in due:
            log.warning(
                "%s %s is still queued; sending it again (the message may be lost)", rows.noun, job_id
            )
            rows.send(job_id)
        return due

    return run_job, sweep_stale_jobs, resend_queued_jobs
