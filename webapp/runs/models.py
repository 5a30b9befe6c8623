"""A training run and what its trainer reported: logs and checkpoints.

Metric points live in the metrics app; the run keeps the latest step and loss
so that lists never need to touch the points table.
"""

from __future__ import annotations

from pathlib import Path

from django.conf import settings
from django.db import models

from webapp.lifecycle import JobStateMachine, ProcessJob
from webapp.projects.models import Project


class RunStatus(models.TextChoices):
    QUEUED = "queued"
    STARTING = "starting"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"


class RunSource(models.TextChoices):
    MANAGED = "managed"  # launched and supervised by Runwright's workers
    EXTERNAL = "external"  # trained elsewhere; reports over the API (SDK, MLflow client)


ACTIVE_STATUSES = (RunStatus.QUEUED, RunStatus.STARTING, RunStatus.RUNNING)
# Shown as ended (``lost`` too: it may be taken back or resumed, but nothing trains it now).
FINAL_STATUSES = (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.LOST)
# The statuses in which a supervisor owns the run (heartbeats, progress, cancel checks).
SUPERVISED_STATUSES = (RunStatus.STARTING, RunStatus.RUNNING)

# Every status change a run may make; every write goes through it (webapp/runs/transitions.py).
RUN_STATES = JobStateMachine(
    # A launched run starts queued; an external run starts running (nothing launches it: its
    # creator is already training).
    initial=(RunStatus.QUEUED, RunStatus.RUNNING),
    moves={
        # Claimed by a worker; its launch could not be sent; cancelled before it started.
        RunStatus.QUEUED: (RunStatus.STARTING, RunStatus.FAILED, RunStatus.CANCELLED),
        # The trainer reports it trains; or the supervisor's final word; or the sweep's ``lost``.
        RunStatus.STARTING: (
            RunStatus.RUNNING,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.LOST,
        ),
        RunStatus.RUNNING: (RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.LOST),
        # Marked lost while its supervisor lives: taken back, or finished by it (it knows how it ended).
        # Or resumed from its last checkpoint (by a person or by automatic recovery).
        RunStatus.LOST: (
            RunStatus.RUNNING,
            RunStatus.COMPLETED,
            RunStatus.FAILED,
            RunStatus.CANCELLED,
            RunStatus.LOST,
            RunStatus.QUEUED,
        ),
        RunStatus.COMPLETED: (),
        # Resumed from its latest checkpoint, or restarted from scratch: a new attempt of the run.
        RunStatus.FAILED: (RunStatus.QUEUED,),
        RunStatus.CANCELLED: (RunStatus.QUEUED,),
    },
)
# The ended statuses from which a run may start again (webapp/runs/transitions.py ``requeue``).
RESUMABLE_STATUSES = (RunStatus.FAILED, RunStatus.CANCELLED, RunStatus.LOST)


class AttemptKind(models.TextChoices):
    """How an attempt of a run was started."""

    LAUNCH = "launch", "launched"
    RESUME = "resume", "resumed"
    RESTART = "restart", "restarted from scratch"
    RECOVERY = "recovery", "resumed automatically"


class Run(ProcessJob):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    name = models.CharField(max_length=200)
    preset = models.CharField(max_length=50, blank=True)
    config = models.JSONField()  # the full, validated RunConfig.to_dict()
    status = models.CharField(max_length=12, choices=RunStatus.choices, default=RunStatus.QUEUED)
    source = models.CharField(max_length=10, choices=RunSource.choices, default=RunSource.MANAGED)
    # The lifecycle's columns are ProcessJob's: for a run, ``error`` is the trainer's traceback
    # or the supervisor's reason, ``worker`` the host that runs it, ``pid`` the launcher's
    # process group, ``dispatched_at`` when its launch message was last known sent.
    step = models.BigIntegerField(default=0)
    last_loss = models.FloatField(null=True, blank=True)
    attempt = models.PositiveIntegerField(default=0)  # incremented by every launch or resume
    # Under RUNWRIGHT_LAUNCHER=slurm: the current attempt's Slurm job, its state and Slurm's
    # reason while it waits (PENDING / Resources), as squeue last told its supervisor.
    slurm_job_id = models.CharField(max_length=32, blank=True)
    slurm_state = models.CharField(max_length=32, blank=True)
    slurm_reason = models.CharField(max_length=200, blank=True)
    # Byte offset in events.jsonl up to which events are in the database.
    events_offset = models.BigIntegerField(default=0)
    # How the next (or current) attempt was started; the claim copies it into its RunAttempt.
    start_kind = models.CharField(max_length=10, choices=AttemptKind.choices, default=AttemptKind.LAUNCH)
    # Hidden from the project's default run list; nothing else changes.
    archived = models.BooleanField(default=False)
    # The sweep that launched it (webapp/sweeps), if any.
    sweep = models.ForeignKey(
        "sweeps.Sweep", null=True, blank=True, on_delete=models.SET_NULL, related_name="runs"
    )

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["project", "-created_at"]), models.Index(fields=["status"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def run_dir(self) -> Path:
        return settings.RUNS_DIR / str(self.id)

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def duration_seconds(self) -> float | None:
        if not self.started_at:
            return None
        from django.utils import timezone

        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class RunAttempt(models.Model):
    """One start of a run by a worker: written by the claim, ended by the final write or the sweep."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="attempts")
    number = models.PositiveIntegerField()  # the run's ``attempt`` while this one ran
    kind = models.CharField(max_length=10, choices=AttemptKind.choices, default=AttemptKind.LAUNCH)
    from_step = models.BigIntegerField(null=True, blank=True)  # the checkpoint it resumed from
    worker = models.CharField(max_length=200, blank=True)
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=RunStatus.choices, blank=True)  # empty while it runs
    reason = models.TextField(blank=True)  # why it ended: the error or the supervisor's reason

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "number"], name="unique_run_attempt_number")]
        ordering = ["number"]

    def __str__(self) -> str:
        return f"run {self.run_id} attempt {self.number} ({self.status or 'running'})"


class RunLog(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="logs")
    seq = models.BigIntegerField()  # the event's seq: re-ingesting the same line upserts
    time = models.FloatField()  # unix seconds from the trainer
    level = models.CharField(max_length=10, default="info")
    message = models.TextField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="unique_run_log_seq")]
        ordering = ["seq"]


class KeptCheckpoints(models.Manager):
    """Checkpoints still on disk: what can be evaluated, resumed from or downloaded.

    An external run's checkpoints are not among them: their files are on its client's machine.
    """

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(pruned_at__isnull=True, external=False)


class Checkpoint(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.BigIntegerField()
    path = models.CharField(max_length=500)  # relative to the run directory
    created_at = models.DateTimeField(auto_now_add=True)
    # When the supervisor found it gone from disk (train.keep_last): the row stays, so the run
    # page's checkpoints panel can say it was pruned, but the default manager (and with it
    # ``run.checkpoints``) no longer returns it. ``every`` includes them.
    pruned_at = models.DateTimeField(null=True, blank=True)
    # Reported by an external run's client: ``path`` is where it is on that machine, shown and
    # never read; listed on the run page, never downloaded, evaluated or resumed from.
    external = models.BooleanField(default=False)

    objects = KeptCheckpoints()
    every = models.Manager()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "step"], name="unique_run_checkpoint_step")]
        ordering = ["step"]


class RunSample(models.Model):
    """What the model wrote for one prompt of ``train.sample_prompts`` at one step."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="samples", db_index=False)
    step = models.BigIntegerField()
    index = models.PositiveSmallIntegerField()  # the prompt's place in the list
    prompt = models.TextField()
    text = models.TextField()
    time = models.FloatField()  # unix seconds from the trainer

    class Meta:
        # A resumed attempt that samples the same step again replaces it; the index starts with
        # the run, so it also serves the run's own reads (no index of its own on ``run``).
        constraints = [
            models.UniqueConstraint(fields=["run", "step", "index"], name="unique_run_sample_step_index")
        ]
        ordering = ["step", "index"]
