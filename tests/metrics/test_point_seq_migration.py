"""Points stored before ``seq`` existed are numbered in the order they were inserted, and later writes after them."""

from __future__ import annotations

import pytest
from django.core.management import call_command

BEFORE = [("metrics", "0003_point_run_step_index")]


@pytest.mark.django_db(transaction=True)
def test_migration_numbers_existing_points_and_later_writes_follow_them(run_before_migration):
    old, run = run_before_migration(BEFORE)
    point = old.get_model("metrics", "MetricPoint")
    point.objects.bulk_create(
        [point(run_id=run.id, key="loss", step=s, value=1.0, time=0.0) for s in range(100)]
    )

    call_command("migrate", verbosity=0)

    from webapp.metrics.models import MetricPoint
    from webapp.metrics.services import Point, upsert_points

    rows = list(MetricPoint.objects.filter(run_id=run.id).order_by("step").values_list("id", "seq"))
    assert all(seq == pk for pk, seq in rows)
    upsert_points(run.id, [Point("loss", 5, 2.0, 0.0)])  # a step re-logged after the upgrade
    assert MetricPoint.objects.get(run_id=run.id, step=5).seq == max(pk for pk, _ in rows) + 1
