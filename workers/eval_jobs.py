"""Eval jobs on workers: run ``python -m modelcore.evaluate`` as a subprocess and follow it.

The process side (start, watch, stop, reap, the final write's retries) is the job
runner's (``workers.jobs``), the same as a trainer's: torch never loads in the worker,
an out-of-memory kills only the evaluator, GPU memory is freed at exit, and the
evaluator dies with its runner. What is the eval runner's own: the evaluator's stderr
carries one JSON progress event per line, which becomes the job's progress bar (written
every second, which is also the heartbeat and the cancel check); a time limit; and the
results JSON stored when the evaluator exits. The row keeps the results without
per-sample records; those stay in the job's results file.

The task acknowledges late, like ``launch_run``: a message is only gone once a worker
ran it; beat re-sends jobs queued too long (``resend_queued_eval_jobs``).

``schedule_periodic_evals`` is what the training supervisor calls for each
checkpoint event: the run's ``eval.tasks``/``eval.every`` decide whether a
job is queued, and its scores become ``eval/<task>/<metric>`` metric points.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

from celery import shared_task
from django.conf import settings

from modelcore.evaluation.taskconfig import check_task_name
from webapp.evals import transitions
from webapp.evals.models import EvalJob, EvalStatus, ModelSource
from webapp.evals.services import enqueue_eval, schedule_periodic_eval
from webapp.evals.sources import resolve_hf_dir, task_dirs
from workers import job_processes
from workers.jobs import JobRunner, Launch, log_tail

log = logging.getLogger(__name__)

EVAL_TIME_LIMIT_SECONDS = int(getattr(settings, "EVAL_TIME_LIMIT_SECONDS", 6 * 3600))
STOP_GRACE_SECONDS = 60
POLL_SECONDS = 0.5
PROGRESS_WRITE_SECONDS = 1.0
KILL_AFTER_SECONDS = 5.0
ERROR_TAIL_CHARS = 8000


@shared_task(
    bind=True,
    name="workers.eval_jobs.run_eval_job",
    ignore_result=True,
    # Safe: a second delivery finds the job claimed (see transitions.claim).
    acks_late=True,
    soft_time_limit=EVAL_TIME_LIMIT_SECONDS + STOP_GRACE_SECONDS,
    time_limit=EVAL_TIME_LIMIT_SECONDS + 2 * STOP_GRACE_SECONDS,
)
def run_eval_job(self, job_id: int) -> str | None:
    """Claim the queued job and run the evaluator to its end; a job not queued is left alone."""
    worker = getattr(self.request, "hostname", None) or socket.gethostname()
    job = transitions.claim(job_id, worker)
    if job is None:
        log.info("eval job %s is not queued (claimed, cancelled or deleted); nothing to do", job_id)
        return None
    return EvalRunner(job).run()


@shared_task(
    name="workers.eval_jobs.sweep_stale_eval_jobs", ignore_result=True, soft_time_limit=30, time_limit=60
)
def sweep_stale_eval_jobs() -> list[int]:
    """Fail running jobs whose worker stopped heartbeating (add to the beat schedule)."""
    return transitions.fail_stale_jobs(float(settings.LOST_AFTER_SECONDS))


@shared_task(
    name="workers.eval_jobs.resend_queued_eval_jobs", ignore_result=True, soft_time_limit=30, time_limit=60
)
def resend_queued_eval_jobs() -> list[int]:
    """Send the task of jobs queued for longer than ``REQUEUE_AFTER_SECONDS`` again."""
    due = transitions.jobs_to_resend(dt.timedelta(seconds=settings.REQUEUE_AFTER_SECONDS))
    for job_id in due:
        log.warning("eval job %s is still queued; sending it again (the message may be lost)", job_id)
        enqueue_eval(job_id)
    return due


def schedule_periodic_evals(run_id: int, checkpoint_step: int) -> int | None:
    """Queue the eval the run's config asks for at this checkpoint; the job id, or None.

    Idempotent: a checkpoint event read twice schedules one job. Never raises
    into the supervisor: a problem here must not disturb training.
    """
    try:
        job = schedule_periodic_eval(run_id, checkpoint_step)
    except Exception:
        log.exception("run %s: could not schedule the eval of checkpoint %s", run_id, checkpoint_step)
        return None
    return job.id if job is not None else None


def evaluate_command(job: EvalJob) -> list[str]:
    """The evaluator's argument list (never a shell string: paths and task names are user input)."""
    argv = [sys.executable, "-m", "modelcore.evaluate"]
    if job.source == ModelSource.CHECKPOINT:
        if job.run_id is None or job.checkpoint_step is None:
            raise ValueError("the job names no run checkpoint")
        argv += ["--model", str(job.run.run_dir), "--step", str(job.checkpoint_step)]
    elif job.source == ModelSource.HF:
        argv += ["--model", str(resolve_hf_dir(job.hf_path))]
    else:
        raise ValueError(f"{job.source} jobs have nothing to evaluate")
    # Re-checked here, not only where the job was created: a job row is data, and a task name
    # must never reach the evaluator as a path (--registry-only makes it look names up only).
    argv += ["--tasks", ",".join(check_task_name(t, "tasks") for t in job.tasks), "--registry-only"]
    for folder in task_dirs(job.project_id):
        argv += ["--tasks-dir", str(folder)]
    if job.num_fewshot is not None:
        argv += ["--num-fewshot", str(job.num_fewshot)]
    if job.limit is not None:
        argv += ["--limit", str(job.limit)]
    batch = getattr(settings, "EVAL_BATCH_SIZE", None)
    if batch:
        argv += ["--batch-size", str(batch)]
    iters = getattr(settings, "EVAL_BOOTSTRAP_ITERS", None)
    if iters is not None:
        argv += ["--bootstrap-iters", str(iters)]
    device = getattr(settings, "EVAL_DEVICE", None)
    if device:
        argv += ["--device", str(device)]
    argv += ["--output", str(job.results_file)]
    return argv


@dataclass
class _Progress:
    """Progress over all tasks from the evaluator's events."""

    tasks: list[str]
    finished: set[str] = field(default_factory=set)
    current: str = ""
    done: int = 0
    total: int = 0
    error: str = ""

    def feed(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "task_start":
            self.current, self.done, self.total = (
                str(event.get("task", "")),
                0,
                int(event.get("requests") or 0),
            )
        elif kind == "progress":
            self.current = str(event.get("task", self.current))
            self.done, self.total = int(event.get("done") or 0), int(event.get("total") or 0)
        elif kind == "task_end":
            self.finished.add(str(event.get("task", "")))
            self.done = self.total
        elif kind == "error":
            self.error = str(event.get("error", ""))

    @property
    def fraction(self) -> float:
        n = max(1, len(self.tasks))
        within = min(1.0, self.done / self.total) if self.total and self.current not in self.finished else 0.0
        # Kept below 1 until the results are stored: 100 % means the job is complete.
        return min(0.99, (len(self.finished) + within) / n)


class EvalRunner(JobRunner):
    """One eval job: the evaluator's progress events, cancel and time limit, its results."""

    noun = "evaluator"
    runner_name = "eval runner"
    failed_status = EvalStatus.FAILED
    time_limit_message = "The eval job reached the worker's time limit and was stopped."

    def __init__(self, job: EvalJob, *, time_limit: float | None = None, poll_seconds: float = POLL_SECONDS):
        super().__init__(
            tag=job_processes.new_tag("eval", job.id),
            description=f"eval job {job.id}",
            poll_seconds=poll_seconds,
            heartbeat_seconds=PROGRESS_WRITE_SECONDS,
            kill_after=KILL_AFTER_SECONDS,
            time_limit=float(time_limit if time_limit is not None else EVAL_TIME_LIMIT_SECONDS),
        )
        self.job = job
        self.progress = _Progress(list(job.tasks))
        self.results: dict[str, Any] | None = None  # the results JSON without per-sample records
        self.has_samples = False
        self._offset = 0
        self._partial = b""

    def run(self) -> str:
        """Run the evaluator to its end; returns the final status written."""
        return self.run_job()

    def prepare(self) -> Launch:
        job = self.job
        job.job_dir.mkdir(parents=True, exist_ok=True)
        job.results_file.unlink(missing_ok=True)
        # The evaluator reads local folders only.
        offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        return Launch(evaluate_command(job), {}, cwd=job.job_dir, log_path=job.log_file, env_defaults=offline)

    def started(self, pid: int) -> None:
        transitions.record_process(self.job.id, pid)

    def read_events(self) -> None:
        """The evaluator's JSON progress lines in its log (stdout and stderr together)."""
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
                continue
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.progress.feed(event)

    def heartbeat(self) -> None:
        fraction = round(self.progress.fraction, 4)
        if transitions.record_progress(self.job.id, fraction, self.progress.current):
            self.request_stop("cancel")

    def decide(self, code: int) -> tuple[str, str]:
        if self.stop.reason == "cancel":
            return EvalStatus.CANCELLED, ""
        if self.stop.reason == "timeout":
            return EvalStatus.FAILED, (
                f"The evaluation ran past its time limit ({self.time_limit:.0f} s) and was stopped. "
                "Evaluate fewer tasks or samples (limit) per job."
            )
        if self.stop.reason == "shutdown":
            return EvalStatus.FAILED, "The worker shut down while the job ran; start the job again."
        if code != 0:
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            tail = log_tail(self.job.log_file, ERROR_TAIL_CHARS, missing="(no evaluator output)")
            return EvalStatus.FAILED, f"The evaluator {how}.\n\n{self.progress.error or tail}"
        try:
            data = json.loads(self.job.results_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            return EvalStatus.FAILED, f"The evaluator wrote no readable results: {exc}"
        samples = data.get("samples") or {}
        self.has_samples = any(
            any(len(record) > 1 for record in records)
            for records in samples.values()
            if isinstance(records, list)
        )
        self.results = {k: v for k, v in data.items() if k != "samples"}
        return EvalStatus.COMPLETED, ""

    def write_final(self, status: str, error: str) -> bool:
        # Stored with a completed status only (transitions.finish).
        return transitions.finish(
            self.job.id, status, error=error, results=self.results, has_samples=self.has_samples
        )
