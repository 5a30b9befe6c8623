"""Sampling from and exporting a run checkpoint on workers: the third kind of job of the runner.

The process side (start, watch, stop, reap, the final write's retries) is ``workers.jobs``'s,
as for a trainer or an evaluator: torch never loads in the worker or the web. What is this
kind's own:

- a sample job runs ``python -m modelcore.sample_job``, which prints a JSON line per piece of
  text as its token is chosen; each round the runner reads the new lines, stores the text so
  far on the job and publishes it (the run page's stream shows tokens as they come); the
  final ``done`` line is the stored text;
- an export job runs ``python -m modelcore.export`` into the job's folder in the run
  directory; its Hugging Face folder is what the page's archive download streams.

Both check the cancel flag every round and have a time limit.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import sys

from celery import shared_task
from django.conf import settings

from webapp.samples import transitions
from webapp.samples.models import SampleJob, SampleKind, SampleStatus
from webapp.samples.services import enqueue_sample_job
from workers import job_processes
from workers.jobs import JobRunner, Launch, log_tail

log = logging.getLogger(__name__)

SAMPLE_TIME_LIMIT_SECONDS = int(getattr(settings, "SAMPLE_TIME_LIMIT_SECONDS", 3600))
STOP_GRACE_SECONDS = 30
POLL_SECONDS = 0.2  # a new token shows on the page at most this late
HEARTBEAT_SECONDS = 2.0
KILL_AFTER_SECONDS = 5.0
ERROR_TAIL_CHARS = 8000


@shared_task(
    bind=True,
    name="workers.sample_jobs.run_sample_job",
    ignore_result=True,
    # Safe: a second delivery finds the job claimed (see transitions.claim).
    acks_late=True,
    soft_time_limit=SAMPLE_TIME_LIMIT_SECONDS + STOP_GRACE_SECONDS,
    time_limit=SAMPLE_TIME_LIMIT_SECONDS + 2 * STOP_GRACE_SECONDS,
)
def run_sample_job(self, job_id: int) -> str | None:
    """Claim the queued job and run it to its end; a job not queued is left alone."""
    worker = getattr(self.request, "hostname", None) or socket.gethostname()
    job = transitions.claim(job_id, worker)
    if job is None:
        log.info("sample job %s is not queued (claimed, cancelled or deleted); nothing to do", job_id)
        return None
    return SampleRunner(job).run_job()


@shared_task(
    name="workers.sample_jobs.sweep_stale_sample_jobs", ignore_result=True, soft_time_limit=30, time_limit=60
)
def sweep_stale_sample_jobs() -> list[int]:
    """Fail running jobs whose worker stopped heartbeating (on the beat schedule)."""
    return transitions.fail_stale_jobs(float(settings.LOST_AFTER_SECONDS))


@shared_task(
    name="workers.sample_jobs.resend_queued_sample_jobs",
    ignore_result=True,
    soft_time_limit=30,
    time_limit=60,
)
def resend_queued_sample_jobs() -> list[int]:
    """Send the task of jobs queued for longer than ``REQUEUE_AFTER_SECONDS`` again."""
    due = transitions.jobs_to_resend(dt.timedelta(seconds=settings.REQUEUE_AFTER_SECONDS))
    for job_id in due:
        log.warning("sample job %s is still queued; sending it again (the message may be lost)", job_id)
        enqueue_sample_job(job_id)
    return due


def sample_command(job: SampleJob) -> list[str]:
    """The engine's argument list (never a shell string); the prompt travels in a file."""
    run_dir, step = str(job.run.run_dir), str(job.checkpoint_step)
    if job.kind == SampleKind.EXPORT:
        return [sys.executable, "-m", "modelcore.export", run_dir, str(job.export_dir), "--step", step]
    return [
        sys.executable,
        "-m",
        "modelcore.sample_job",
        run_dir,
        "--step",
        step,
        "--prompt-file",
        str(job.prompt_file),
        "--max-new-tokens",
        str(job.max_tokens),
        "--temperature",
        repr(float(job.temperature)),
        "--top-p",
        repr(float(job.top_p)),
    ]


class SampleRunner(JobRunner):
    """One sampling or export job: the text as it comes, cancel and time limit, the result."""

    noun = "sampler"
    runner_name = "sample runner"
    failed_status = SampleStatus.FAILED
    time_limit_message = "The job reached the worker's time limit and was stopped."

    def __init__(
        self, job: SampleJob, *, time_limit: float | None = None, poll_seconds: float = POLL_SECONDS
    ):
        super().__init__(
            tag=job_processes.new_tag(job.kind, job.id),
            description=f"{job.kind} job {job.id}",
            poll_seconds=poll_seconds,
            heartbeat_seconds=HEARTBEAT_SECONDS,
            kill_after=KILL_AFTER_SECONDS,
            time_limit=float(time_limit if time_limit is not None else SAMPLE_TIME_LIMIT_SECONDS),
        )
        if job.kind == SampleKind.EXPORT:
            self.noun = "exporter"
        self.job = job
        self.text = ""  # the continuation so far
        self.final_text: str | None = None  # the "done" line's
        self.engine_error = ""
        self._offset = 0
        self._partial = b""
        self._stored = ""  # the text last written to the row

    def prepare(self) -> Launch:
        job = self.job
        job.job_dir.mkdir(parents=True, exist_ok=True)
        if job.kind == SampleKind.SAMPLE:
            job.prompt_file.write_text(job.prompt, encoding="utf-8")
        env = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        return Launch(sample_command(job), env, cwd=job.job_dir, log_path=job.log_file)

    def started(self, pid: int) -> None:
        transitions.record_process(self.job.id, pid)

    def read_events(self) -> None:
        """The engine's JSON lines in its log: pieces of text, the whole text, an error."""
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
            if not line.startswith(b"{"):
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if not isinstance(event, dict):
                continue
            kind = event.get("event")
            if kind == "token":
                self.text += str(event.get("text", ""))
            elif kind == "done":
                self.final_text = str(event.get("text", ""))
            elif kind == "error":
                self.engine_error = str(event.get("error", ""))
        if self.text != self._stored and self.job.kind == SampleKind.SAMPLE:
            self._stored = self.text
            if transitions.record_text(self.job.id, self.text):
                self.request_stop("cancel")

    def heartbeat(self) -> None:
        if transitions.record_text(self.job.id, self.text):
            self.request_stop("cancel")

    def decide(self, code: int) -> tuple[str, str]:
        if self.stop.reason == "cancel":
            return SampleStatus.CANCELLED, ""
        if self.stop.reason == "timeout":
            return (
                SampleStatus.FAILED,
                f"The job ran past its time limit ({self.time_limit:.0f} s) and was stopped.",
            )
        if self.stop.reason == "shutdown":
            return SampleStatus.FAILED, "The worker shut down while the job ran; start it again."
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = log_tail(self.job.log_file, ERROR_TAIL_CHARS, missing=f"(no {self.noun} output)")
            return SampleStatus.FAILED, f"The {self.noun} {how}.\n\n{self.engine_error or tail}"
        if self.job.kind == SampleKind.EXPORT:
            if not (self.job.export_dir / "config.json").is_file():
                return SampleStatus.FAILED, "The exporter wrote no model folder."
            return SampleStatus.COMPLETED, ""
        if self.final_text is None:
            return SampleStatus.FAILED, "The sampler ended without its text."
        self.text = self.final_text
        return SampleStatus.COMPLETED, ""

    def write_final(self, status: str, error: str) -> bool:
        text = self.text if self.job.kind == SampleKind.SAMPLE else None
        return transitions.finish(self.job.id, status, error=error, text=text)
