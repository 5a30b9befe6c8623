"""The run page benchmark's bulk SQLite fill writes what the metrics app's writer would.

``benchmarks.run_page`` fills 200 keys x 1M points straight into SQLite (minutes) instead of
through ``write_points`` (hours); its figures mean something only if the rows are the same.
"""

from __future__ import annotations

import sqlite3

import pytest
from django.db import connection

from benchmarks.run_page import fill_series_bulk_sqlite, fill_series_through_writer, point_value
from webapp.metrics.models import MetricKey, MetricPoint, MetricSummary

KEYS = ["train/loss", "system/gpu_util/rank0", "val/loss"]
POINTS = 5_000  # levels 0-3 with several buckets, one bucket above
SUMMARY_COLUMNS = "key, level, bucket, count, first_step, last_step, min_step, min_value, max_step, max_value"


def _metrics_schema(path) -> sqlite3.Connection:
    """An empty SQLite file with the metrics tables and indexes of the test database."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT sql FROM sqlite_master WHERE tbl_name LIKE 'metrics_%' AND sql IS NOT NULL "
            "ORDER BY type = 'index'"
        )
        statements = [sql for (sql,) in cursor.fetchall()]
    db = sqlite3.connect(path)
    for sql in statements:
        db.execute(sql)
    db.commit()
    return db


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the bulk fill is for the embedded SQLite default")
def test_bulk_fill_writes_the_writers_rows(run, tmp_path):
    # Batches of 1,000 steps: summaries recomputed across batches, as ingestion's are.
    fill_series_through_writer(run.id, KEYS, POINTS, chunk_steps=1_000)
    path = tmp_path / "bulk.sqlite3"
    _metrics_schema(path).close()
    fill_series_bulk_sqlite(path, run.id, KEYS, POINTS)

    bulk = sqlite3.connect(path)
    points = MetricPoint.objects.filter(run=run).order_by("id")
    expected = list(points.values_list("key", "step", "value", "time", "seq"))
    got = bulk.execute("SELECT key, step, value, time, seq FROM metrics_metricpoint ORDER BY id").fetchall()
    assert len(got) == len(KEYS) * POINTS
    assert got == expected  # same order of writes too: ids and seqs rise together
    summaries = MetricSummary.objects.filter(run=run).order_by("key", "level", "bucket")
    expected = list(summaries.values_list(*SUMMARY_COLUMNS.split(", ")))
    got = bulk.execute(
        f"SELECT {SUMMARY_COLUMNS} FROM metrics_metricsummary ORDER BY key, level, bucket"
    ).fetchall()
    assert got == expected
    assert {row[1] for row in got} == set(range(8))
    keys = bulk.execute("SELECT key FROM metrics_metrickey ORDER BY id").fetchall()
    assert [k for (k,) in keys] == list(
        MetricKey.objects.filter(run=run).order_by("id").values_list("key", flat=True)
    )
    # The indexes dropped for the fill are back (the unique ones are the tables' own, never dropped).
    names = {
        n for (n,) in bulk.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
    }
    assert names == {"metric_point_run_step", "metric_point_run_seq"}
    assert bulk.execute("PRAGMA journal_mode").fetchone() == ("wal",)


@pytest.mark.skipif(connection.vendor != "sqlite", reason="the bulk fill is for the embedded SQLite default")
def test_the_bulk_fills_spike_is_its_coarsest_maximum(run, tmp_path):
    """The series falls but spikes at step 99,991: the top summary keeps that spike and the last step."""
    path = tmp_path / "bulk.sqlite3"
    _metrics_schema(path).close()
    fill_series_bulk_sqlite(path, run.id, ["train/loss"], 200_000)
    top = sqlite3.connect(path).execute(
        "SELECT count, min_step, min_value, max_step, max_value FROM metrics_metricsummary WHERE level = 7"
    )
    assert top.fetchall() == [(200_000, 200_000, point_value(200_000), 99_991, point_value(99_991))]
