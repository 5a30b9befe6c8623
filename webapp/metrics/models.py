"""Metric points: the volume of the system (a long run logs millions).

One row per (run, key, step); writes are bulk upserts on that unique key so
re-ingesting a batch after a crash, or re-logging steps after a resume,
replaces rather than duplicates.
"""

from __future__ import annotations

from django.db import models

from webapp.runs.models import Run


class MetricPoint(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="points")
    key = models.CharField(max_length=200)
    step = models.BigIntegerField()
    value = models.FloatField(null=True)  # null: the trainer logged NaN/inf
    time = models.FloatField()  # unix seconds, for wall-clock charts

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "key", "step"], name="unique_metric_point"),
        ]
