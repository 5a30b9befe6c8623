"""Metric points get ``seq``, the order in which a run's points were written (live streams follow it)."""

from django.db import migrations, models
from django.db.models import F


def number_existing_points(apps, schema_editor):
    # The primary key already orders the rows ever inserted; the services continue from
    # each run's highest seq, so every later write of a run sorts after these.
    apps.get_model("metrics", "MetricPoint").objects.update(seq=F("id"))


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0003_point_run_step_index"),
        ("runs", "0001_initial"),
    ]

    operations = [
        migrations.AddField(
            model_name="metricpoint",
            name="seq",
            field=models.BigIntegerField(default=0),
        ),
        migrations.RunPython(number_existing_points, migrations.RunPython.noop, elidable=True),
        migrations.AddIndex(
            model_name="metricpoint",
            index=models.Index(fields=["run", "seq"], name="metric_point_run_seq"),
        ),
    ]
