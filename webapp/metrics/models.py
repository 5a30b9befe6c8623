"""Metric points: the volume of the system (a long run logs millions).

One row per (run, key, step); writes are bulk upserts on that unique key so
re-ingesting a batch after a crash, or re-logging steps after a resume,
replaces rather than duplicates. Beside the points: the keys each run has logged, and
per-bucket min/max summaries that let a chart read a long series without scanning it.
"""

from __future__ import annotations

from django.db import models

from webapp.runs.models import Run

# No index of its own on ``run`` (db_index=False) in any of these tables: each has a unique
# index that starts with the run, which serves the same lookups (a run's deletion, its
# rows). A separate one cost every insert an index more, and PostgreSQL, its statistics
# stale on a young table, picked it for the reads beside a batch: a read of the run's
# every row instead of a range of one key.
#
# Points and summaries have no foreign key constraint on PostgreSQL (db_constraint=False):
# its check of every inserted row was 40% of the database's time for an ingested batch.
# Triggers keep the same guarantees with one check per statement (migration 0006: rows
# name an existing run, which they lock as the key's check did; a run is not deleted
# while rows of it remain). SQLite keeps its foreign keys, cheap in process.


class MetricPoint(models.Model):
    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="points", db_index=False, db_constraint=False
    )
    key = models.CharField(max_length=200)
    step = models.BigIntegerField()
    value = models.FloatField(null=True)  # null: the trainer logged NaN/inf
    time = models.FloatField()  # unix seconds, for wall-clock charts
    # When the row was last written, in the run's order of writes (metrics.services hands
    # these out): a live stream follows a run by it, so a point written late for a step the
    # stream has passed (val/loss after the validation pass), or re-logged by a resumed
    # attempt, is still sent. Unlike the primary key it moves on every upsert.
    seq = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "key", "step"], name="unique_metric_point"),
        ]
        # A live stream reads "every key after step S" of one run each second; the unique index
        # (key before step) cannot serve that range, and without this index each read scanned
        # the run's whole history (28 ms at 1M points on PostgreSQL, 1.4 ms with it).
        indexes = [
            models.Index(fields=["run", "step"], name="metric_point_run_step"),
            models.Index(fields=["run", "seq"], name="metric_point_run_seq"),
        ]


class MetricKey(models.Model):
    """One row per (run, key) logged: the chart's key list without scanning the points."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="metric_keys", db_index=False)
    key = models.CharField(max_length=200)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "key"], name="unique_metric_key")]


class MetricSummary(models.Model):
    """The count and the min and max points of one bucket of steps (see metrics.summaries)."""

    run = models.ForeignKey(
        Run, on_delete=models.CASCADE, related_name="metric_summaries", db_index=False, db_constraint=False
    )
    key = models.CharField(max_length=200)
    level = models.SmallIntegerField()  # buckets of FANOUT ** (level + 1) steps
    bucket = models.BigIntegerField()  # step // bucket width
    count = models.IntegerField()
    first_step = models.BigIntegerField()
    last_step = models.BigIntegerField()
    min_step = models.BigIntegerField(null=True)  # null: every value in the bucket is NaN/inf
    min_value = models.FloatField(null=True)
    max_step = models.BigIntegerField(null=True)
    max_value = models.FloatField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["run", "key", "level", "bucket"], name="unique_metric_summary"),
        ]
