"""A sweep: a base config, a search over some of its fields, and the runs it launches."""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.projects.models import Project


class SweepStatus(models.TextChoices):
    RUNNING = "running"  # launching runs as slots free up
    COMPLETED = "completed"  # every trial launched and every run ended
    CANCELLED = "cancelled"
    FAILED = "failed"  # a run could not be created any more (its creator lost the right)


class Sweep(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="sweeps")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    status = models.CharField(max_length=12, choices=SweepStatus.choices, default=SweepStatus.RUNNING)
    error = models.TextField(blank=True)
    preset = models.CharField(max_length=50, blank=True)
    base = models.JSONField(default=dict)  # the partial config laid over the preset
    method = models.CharField(max_length=10)  # grid | random
    parameters = models.JSONField()  # {field path: {"values": [...]} | {"min", "max", "scale"}}
    trials = models.JSONField()  # the expanded list of {field path: value}, in launch order
    concurrency = models.PositiveIntegerField()
    metric = models.CharField(max_length=200)
    goal = models.CharField(max_length=3)  # min | max
    halving_step = models.PositiveIntegerField(null=True, blank=True)
    halving_eta = models.PositiveIntegerField(null=True, blank=True)
    launched = models.PositiveIntegerField(default=0)  # trials turned into runs so far
    # The run of each launched trial, by trial index (a deleted run leaves its id here, unmatched).
    run_ids = models.JSONField(default=list)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name} ({self.status})"

    @property
    def budget(self) -> int:
        return len(self.trials)


class RungResult(models.Model):
    """A run's metric at the halving step, and whether it was kept (one decision per run)."""

    sweep = models.ForeignKey(Sweep, on_delete=models.CASCADE, related_name="rung_results")
    run = models.OneToOneField("runs.Run", on_delete=models.CASCADE, related_name="rung_result")
    value = models.FloatField()
    kept = models.BooleanField()
    decided_at = models.DateTimeField(auto_now_add=True)
