"""Alert rules of a project and the alerts they raised on its runs.

A rule watches either a run's final status (failed, lost) or a metric (a NaN, or a value
above or below a bound after a given step). Each rule fires at most once per run: the
unique (rule, run) row is the fence, so two ingest batches racing cannot fire it twice.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.projects.models import Project
from webapp.runs.models import Run


class AlertKind(models.TextChoices):
    FAILED = "failed", "Run failed"
    LOST = "lost", "Run lost"
    NAN = "nan", "Metric is NaN/inf"
    ABOVE = "above", "Metric above a bound"
    BELOW = "below", "Metric below a bound"


STATUS_KINDS = (AlertKind.FAILED, AlertKind.LOST)
METRIC_KINDS = (AlertKind.NAN, AlertKind.ABOVE, AlertKind.BELOW)


class AlertRule(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="alert_rules")
    kind = models.CharField(max_length=10, choices=AlertKind.choices)
    key = models.CharField(max_length=200, blank=True)  # the metric (metric kinds only)
    threshold = models.FloatField(null=True, blank=True)  # above / below only
    after_step = models.BigIntegerField(default=0)  # metric kinds: points at steps >= this count
    webhook_url = models.CharField(max_length=500, blank=True)  # Slack-compatible; empty: page only
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.describe()

    def describe(self) -> str:
        if self.kind in STATUS_KINDS:
            return f"run {self.kind}"
        after = f" after step {self.after_step}" if self.after_step else ""
        if self.kind == AlertKind.NAN:
            return f"{self.key} is NaN/inf{after}"
        sign = ">" if self.kind == AlertKind.ABOVE else "<"
        return f"{self.key} {sign} {self.threshold:g}{after}"


class AlertFiring(models.Model):
    rule = models.ForeignKey(AlertRule, on_delete=models.CASCADE, related_name="firings")
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="alerts", db_index=False)
    message = models.TextField()
    step = models.BigIntegerField(null=True, blank=True)
    value = models.FloatField(null=True, blank=True)
    fired_at = models.DateTimeField(auto_now_add=True)
    # The webhook's outcome, written by the Celery task that sends it.
    notified_at = models.DateTimeField(null=True, blank=True)
    notify_error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "rule"], name="unique_alert_per_run")]
        ordering = ["-id"]
