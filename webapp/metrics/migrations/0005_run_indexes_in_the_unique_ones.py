"""Metric tables drop their own index on run: the unique index of each starts with the run and serves its lookups."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("metrics", "0004_point_seq"),
        ("runs", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="metrickey",
            name="run",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="metric_keys",
                to="runs.run",
            ),
        ),
        migrations.AlterField(
            model_name="metricpoint",
            name="run",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="points",
                to="runs.run",
            ),
        ),
        migrations.AlterField(
            model_name="metricsummary",
            name="run",
            field=models.ForeignKey(
                db_index=False,
                on_delete=django.db.models.deletion.CASCADE,
                related_name="metric_summaries",
                to="runs.run",
            ),
        ),
    ]
