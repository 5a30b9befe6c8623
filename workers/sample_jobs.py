"""Sampling from and exporting a run checkpoint on workers: the third kind of job of the runner.

What every process job shares (the runner, the JSON lines, cancel, time limit, the tasks)
is ``workers.process_jobs``'s; torch never loads in the worker or the web. What is this
kind's own:

- a sample job runs ``python -m modelcore.sample_job``, which prints a JSON line per piece of
  text as its token is chosen; each round the runner stores the text so far on the job and
  publishes it (the run page's stream shows tokens as they come); the final ``done`` line is
  the stored text;
- an export job runs ``python -m modelcore.export`` into the job's folder in the run
  directory; its Hugging Face folder is what the page's archive download streams.
"""

from __future__ import annotations

import sys
from typing import Any

from django.conf import settings

from webapp.samples import transitions
from webapp.samples.models import SampleJob, SampleKind, SampleStatus
from workers.jobs import Launch
from workers.process_jobs import ProcessJobRunner, process_job_tasks

SAMPLE_TIME_LIMIT_SECONDS = int(getattr(settings, "SAMPLE_TIME_LIMIT_SECONDS", 3600))
STOP_GRACE_SECONDS = 30
POLL_SECONDS = 0.2  # a new token shows on the page at most this late
HEARTBEAT_SECONDS = 2.0


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


class SampleRunner(ProcessJobRunner):
    """One sampling or export job: the text as it comes, cancel and time limit, the result."""

    rows = transitions.JOBS
    kind = "sample"
    time_limit_seconds = SAMPLE_TIME_LIMIT_SECONDS
    stop_grace_seconds = STOP_GRACE_SECONDS
    poll_interval = POLL_SECONDS
    heartbeat_interval = HEARTBEAT_SECONDS
    noun = "sampler"
    runner_name = "sample runner"

    def __init__(self, job: SampleJob, **options: Any):
        super().__init__(job, label=job.kind, **options)
        if job.kind == SampleKind.EXPORT:
            self.noun = "exporter"
        self.text = ""  # the continuation so far
        self.final_text: str | None = None  # the "done" line's
        self._stored = ""  # the text last written to the row

    def prepare(self) -> Launch:
        job = self.job
        job.job_dir.mkdir(parents=True, exist_ok=True)
        if job.kind == SampleKind.SAMPLE:
            job.prompt_file.write_text(job.prompt, encoding="utf-8")
        env = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        return Launch(sample_command(job), env, cwd=job.job_dir, log_path=job.log_file)

    def on_event(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "token":
            self.text += str(event.get("text", ""))
        elif kind == "done":
            self.final_text = str(event.get("text", ""))

    def events_read(self) -> None:
        # Each new piece at once (not at the next heartbeat): the page shows tokens as they come.
        if self.text != self._stored and self.job.kind == SampleKind.SAMPLE:
            self._stored = self.text
            self.heartbeat()

    def heartbeat(self) -> None:
        if transitions.record_text(self.job.id, self.text):
            self.request_stop("cancel")

    def decide_exit(self) -> tuple[str, str]:
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


run_sample_job, sweep_stale_sample_jobs, resend_queued_sample_jobs = process_job_tasks(__name__, SampleRunner)
