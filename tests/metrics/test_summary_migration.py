"""Points stored before the summaries existed get keys and summaries when the database migrates."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from webapp.metrics.selectors import keys_for_run, series

BEFORE = [("metrics", "0001_initial")]


@pytest.mark.django_db(transaction=True)
def test_migration_backfills_keys_and_summaries(run_before_migration):
    old, run = run_before_migration(BEFORE)
    point = old.get_model("metrics", "MetricPoint")
    point.objects.bulk_create(
        [
            point(run_id=run.id, key="loss", step=s, value=9.0 if s == 4321 else 1.0, time=0.0)
            for s in range(30_000)
        ]
        + [point(run_id=run.id, key="lr", step=0, value=0.1, time=0.0)]
    )

    call_command("migrate", verbosity=0)

    from webapp.runs.models import Run

    current = Run.objects.get(pk=run.id)
    assert keys_for_run(current) == ["loss", "lr"]
    out = series(current, "loss", max_points=100)
    assert len(out["steps"]) <= 100 and 9.0 in out["values"]
    assert out["steps"][out["values"].index(9.0)] == 4321
