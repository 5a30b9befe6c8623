"""Eval jobs (one model on some tasks), their stored results, and saved comparison reports.

Per-sample records can be large (prompts, choices, loglikelihoods for every
document), so they stay in the job's results file under the data directory;
the row keeps the results JSON without them, which is all a report table needs.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

from webapp.lifecycle import JobStateMachine, ProcessJob
from webapp.projects.models import Project
from webapp.runs.models import Run


class EvalStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


ACTIVE_EVAL_STATUSES = (EvalStatus.QUEUED, EvalStatus.RUNNING)

# Every status change an eval job may make; every write goes through it (webapp/evals/transitions.py).
EVAL_STATES = JobStateMachine(
    # Imported results are stored as a completed job.
    initial=(EvalStatus.QUEUED, EvalStatus.COMPLETED),
    moves={
        # Claimed by a worker; its task could not be sent (or names an unknown task); cancelled.
        EvalStatus.QUEUED: (EvalStatus.RUNNING, EvalStatus.FAILED, EvalStatus.CANCELLED),
        # The evaluator's end, a cancel, a time limit, or the sweep of a silent worker.
        EvalStatus.RUNNING: (EvalStatus.COMPLETED, EvalStatus.FAILED, EvalStatus.CANCELLED),
        EvalStatus.COMPLETED: (),
        EvalStatus.FAILED: (),
        EvalStatus.CANCELLED: (),
    },
)


class ModelSource(models.TextChoices):
    CHECKPOINT = "checkpoint", "Run checkpoint"
    HF = "hf", "Hugging Face directory"
    IMPORTED = "imported", "Imported results"


def evals_dir() -> Path:
    return Path(settings.DATA_DIR) / "evals"


class EvalJob(ProcessJob):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="eval_jobs")
    source = models.CharField(max_length=12, choices=ModelSource.choices)
    run = models.ForeignKey(Run, null=True, blank=True, on_delete=models.CASCADE, related_name="eval_jobs")
    checkpoint_step = models.BigIntegerField(null=True, blank=True)
    # Relative to the shared models folder (MODELS_DIR); never a path outside it.
    hf_path = models.CharField(max_length=500, blank=True)
    label = models.CharField(max_length=200, blank=True)  # for imported results: the file or model name
    tasks = models.JSONField(default=list)
    num_fewshot = models.PositiveIntegerField(null=True, blank=True)
    limit = models.PositiveIntegerField(null=True, blank=True)
    periodic = models.BooleanField(default=False)  # scheduled by training: results become metric points
    status = models.CharField(max_length=10, choices=EvalStatus.choices, default=EvalStatus.QUEUED)
    progress = models.FloatField(default=0.0)  # 0..1 over all tasks
    current_task = models.CharField(max_length=200, blank=True)
    results = models.JSONField(null=True, blank=True)  # lm-eval schema, without per-sample records
    has_samples = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"]), models.Index(fields=["status"])]
        constraints = [
            # Training schedules at most one periodic eval per checkpoint, however often the event is re-read.
            models.UniqueConstraint(
                fields=["run", "checkpoint_step"],
                condition=models.Q(periodic=True),
                name="unique_periodic_eval_per_checkpoint",
            ),
        ]

    def __str__(self) -> str:
        return f"eval {self.id}: {self.model_label}"

    @property
    def model_label(self) -> str:
        if self.source == ModelSource.CHECKPOINT and self.run_id is not None:
            return f"{self.run.name} @ step {self.checkpoint_step}"
        if self.source == ModelSource.HF:
            return self.label or self.hf_path
        return self.label or f"import {self.id}"

    @property
    def job_dir(self) -> Path:
        return evals_dir() / str(self.id)

    @property
    def results_file(self) -> Path:
        """The full results JSON with per-sample records (written by the evaluator or an import)."""
        return self.job_dir / "results.json"

    @property
    def log_file(self) -> Path:
        return self.job_dir / "evaluate.log"

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_EVAL_STATUSES


class Report(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="eval_reports")
    name = models.CharField(max_length=200)
    jobs = models.ManyToManyField(EvalJob, related_name="reports")
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-updated_at", "-id"]

    def __str__(self) -> str:
        return self.name
