"""Jobs on one checkpoint of a run: sampling text from it, or exporting it to Hugging Face format.

Both are the same kind of job (a worker starts an engine subprocess on a checkpoint and
keeps what it made): one model with a ``kind``, one table of status changes. A job's files
live in the run directory (``jobs/<kind>-<id>``), so they go with the run when it is deleted
and a download is contained in the run like every other file of it.
"""

from __future__ import annotations

from pathlib import Path

from django.db import models

from webapp.lifecycle import JobStateMachine, ProcessJob
from webapp.runs.models import Run


class SampleStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


class SampleKind(models.TextChoices):
    SAMPLE = "sample", "Sample"
    EXPORT = "export", "Export to Hugging Face"


ACTIVE_SAMPLE_STATUSES = (SampleStatus.QUEUED, SampleStatus.RUNNING)

# Every status change a sampling or export job may make; every write goes through it
# (webapp/samples/transitions.py).
SAMPLE_STATES = JobStateMachine(
    initial=(SampleStatus.QUEUED,),
    moves={
        # Claimed by a worker; its task could not be sent; cancelled before a worker took it.
        SampleStatus.QUEUED: (SampleStatus.RUNNING, SampleStatus.FAILED, SampleStatus.CANCELLED),
        # The engine's end, a cancel, a time limit, or the worker shutting down.
        SampleStatus.RUNNING: (SampleStatus.COMPLETED, SampleStatus.FAILED, SampleStatus.CANCELLED),
        SampleStatus.COMPLETED: (),
        SampleStatus.FAILED: (),
        SampleStatus.CANCELLED: (),
    },
)

JOBS_DIR = "jobs"  # under the run directory
EXPORT_DIR = "hf"  # under an export job's folder: the Hugging Face model directory


class SampleJob(ProcessJob):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="sample_jobs")
    checkpoint_step = models.BigIntegerField()
    kind = models.CharField(max_length=8, choices=SampleKind.choices, default=SampleKind.SAMPLE)
    # The sampling settings (unused by an export).
    prompt = models.TextField(blank=True)
    temperature = models.FloatField(default=0.8)
    top_p = models.FloatField(default=1.0)
    max_tokens = models.PositiveIntegerField(default=100)
    text = models.TextField(blank=True)  # the continuation, growing while the job runs
    status = models.CharField(max_length=10, choices=SampleStatus.choices, default=SampleStatus.QUEUED)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["run", "kind", "-created_at"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.id}: run {self.run_id} @ step {self.checkpoint_step}"

    @property
    def relative_dir(self) -> str:
        """The job's folder, relative to the run directory."""
        return f"{JOBS_DIR}/{self.kind}-{self.id}"

    @property
    def job_dir(self) -> Path:
        return self.run.run_dir / self.relative_dir

    @property
    def log_file(self) -> Path:
        return self.job_dir / "job.log"

    @property
    def prompt_file(self) -> Path:
        return self.job_dir / "prompt.txt"

    @property
    def export_dir(self) -> Path:
        return self.job_dir / EXPORT_DIR

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_SAMPLE_STATUSES
