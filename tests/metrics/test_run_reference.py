"""Points and summaries always belong to an existing run: a foreign key on SQLite, triggers
checking a statement's rows together on PostgreSQL (migration 0006). The same answers on both."""

from __future__ import annotations

import psycopg
import pytest
from django.db import IntegrityError, connection, transaction

from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary
from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run

pytestmark = pytest.mark.django_db(transaction=True)  # the checks that wait for commit, too


def test_points_of_a_run_that_does_not_exist_are_refused(run):
    missing = Run.objects.order_by("-id").values_list("id", flat=True).first() + 1000
    with pytest.raises(IntegrityError), transaction.atomic():
        upsert_points(missing, [Point("train/loss", s, 1.0, 0.0) for s in range(300)])
    assert not MetricPoint.objects.filter(run_id=missing).exists()
    assert not MetricSummary.objects.filter(run_id=missing).exists()
    for row in (  # each table on its own (the write above also stores the run's key)
        MetricPoint(run_id=missing, key="a", step=1, value=1.0, time=0.0),
        MetricSummary(run_id=missing, key="a", level=0, bucket=0, count=1, first_step=0, last_step=0),
    ):
        with pytest.raises(IntegrityError), transaction.atomic():
            row.save()


def test_a_run_with_points_left_cannot_be_deleted_but_deleting_it_whole_can(run):
    upsert_points(run.id, [Point("train/loss", s, 1.0, 0.0) for s in range(300)])
    MetricKey.objects.filter(run=run).delete()  # only the points and summaries refer to the run now
    for table in ("metrics_metricpoint", "metrics_metricsummary"):
        with pytest.raises(IntegrityError), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("DELETE FROM runs_run WHERE id = %s", [run.id])  # the run's row alone
        with connection.cursor() as cursor:
            cursor.execute(f"DELETE FROM {table} WHERE run_id = %s", [run.id])
    assert MetricPoint.objects.filter(run=run).count() == 0
    upsert_points(run.id, [Point("train/loss", s, 1.0, 0.0) for s in range(300)])
    run.delete()  # the ORM deletes the points and summaries first
    assert not MetricPoint.objects.filter(run_id=run.id).exists()
    assert not MetricSummary.objects.filter(run_id=run.id).exists()


def test_rows_being_written_hold_their_run_until_they_commit(run):
    """As a foreign key's check does: another transaction cannot delete (or lock for update) the run."""
    if connection.vendor != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    params = connection.get_connection_params()
    other = psycopg.connect(
        **{k: params[k] for k in ("dbname", "user", "host", "port") if params.get(k)}, autocommit=True
    )
    try:
        with transaction.atomic(), connection.cursor() as cursor:  # a write that did not lock the run itself
            cursor.execute(
                "INSERT INTO metrics_metricpoint (run_id, key, step, value, time, seq) "
                "VALUES (%s, 'a', 1, 1.0, 0.0, 1)",
                [run.id],
            )
            with pytest.raises(psycopg.errors.LockNotAvailable):
                other.execute("SELECT id FROM runs_run WHERE id = %s FOR UPDATE NOWAIT", [run.id])
        assert other.execute("SELECT id FROM runs_run WHERE id = %s FOR UPDATE NOWAIT", [run.id]).fetchone()
    finally:
        other.close()
