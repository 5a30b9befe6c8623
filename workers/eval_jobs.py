"""Eval jobs on workers: run ``python -m modelcore.evaluate`` as a subprocess and follow it.

What every process job shares (the runner, the JSON lines, cancel, time limit, the tasks,
the re-send of jobs queued too long) is ``workers.process_jobs``'s, on the job runner of
``workers.jobs``, the same as a trainer's: torch never loads in the worker, an
out-of-memory kills only the evaluator, GPU memory is freed at exit. What is the eval
runner's own: the evaluator's progress events become the job's progress bar (written every
second, which is also the heartbeat and the cancel check), and the results JSON is stored
when the evaluator exits. The row keeps the results without per-sample records; those stay
in the job's results file.

``schedule_periodic_evals`` is what the training supervisor calls for each
checkpoint event: the run's ``eval.tasks``/``eval.every`` decide whether a
job is queued, and its scores become ``eval/<task>/<metric>`` metric points.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings

from modelcore.evaluation.taskconfig import check_task_name
from webapp.evals import transitions
from webapp.evals.models import EvalJob, EvalStatus, ModelSource
from webapp.evals.services import schedule_periodic_eval
from webapp.evals.sources import resolve_hf_dir, task_dirs
from workers.jobs import Launch
from workers.process_jobs import ProcessJobRunner, process_job_tasks

log = logging.getLogger(__name__)

EVAL_TIME_LIMIT_SECONDS = int(getattr(settings, "EVAL_TIME_LIMIT_SECONDS", 6 * 3600))
STOP_GRACE_SECONDS = 60
POLL_SECONDS = 0.5
PROGRESS_WRITE_SECONDS = 1.0


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

    @property
    def fraction(self) -> float:
        n = max(1, len(self.tasks))
        within = min(1.0, self.done / self.total) if self.total and self.current not in self.finished else 0.0
        # Kept below 1 until the results are stored: 100 % means the job is complete.
        return min(0.99, (len(self.finished) + within) / n)


class EvalRunner(ProcessJobRunner):
    """One eval job: the evaluator's progress events, cancel and time limit, its results."""

    rows = transitions.JOBS
    kind = "eval"
    time_limit_seconds = EVAL_TIME_LIMIT_SECONDS
    stop_grace_seconds = STOP_GRACE_SECONDS
    poll_interval = POLL_SECONDS
    heartbeat_interval = PROGRESS_WRITE_SECONDS
    noun = "evaluator"
    runner_name = "eval runner"
    work = "evaluation"
    timeout_advice = "Evaluate fewer tasks or samples (limit) per job."
    time_limit_message = "The eval job reached the worker's time limit and was stopped."

    def __init__(self, job: EvalJob, **options: Any):
        super().__init__(job, **options)
        self.progress = _Progress(list(job.tasks))
        self.results: dict[str, Any] | None = None  # the results JSON without per-sample records
        self.has_samples = False

    def prepare(self) -> Launch:
        job = self.job
        job.job_dir.mkdir(parents=True, exist_ok=True)
        job.results_file.unlink(missing_ok=True)
        # The evaluator reads local folders only.
        offline = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        return Launch(evaluate_command(job), {}, cwd=job.job_dir, log_path=job.log_file, env_defaults=offline)

    def on_event(self, event: dict[str, Any]) -> None:
        self.progress.feed(event)

    def heartbeat(self) -> None:
        fraction = round(self.progress.fraction, 4)
        if transitions.record_progress(self.job.id, fraction, self.progress.current):
            self.request_stop("cancel")

    def decide_exit(self) -> tuple[str, str]:
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


run_eval_job, sweep_stale_eval_jobs, resend_queued_eval_jobs = process_job_tasks(__name__, EvalRunner)
