"""Moving a team's history in: an MLflow experiment's runs as external runs, deduplicated.

Each MLflow run becomes an external run of the project with its params, its tags (and the
label ``imported_from``: the tracking URI and the MLflow run id), its metric histories and
its end. Importing again finds the runs by that label and upserts the same points, so a
second import adds no run and no point (and picks up what a still-running run logged since).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser

from webapp.external import services
from webapp.input_errors import InputError
from webapp.metrics.services import Point
from webapp.mlflow_api.protocol import MLFLOW_TO_STATUS
from webapp.projects.models import Project
from webapp.runs.models import ACTIVE_STATUSES, Run, RunSource

IMPORTED_FROM = "imported_from"


@dataclass
class ImportSummary:
    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    points: int = 0


def import_mlflow(
    *, user: AbstractBaseUser, project: Project, tracking_uri: str, experiment: str, client: Any = None
) -> ImportSummary:
    """Import every run of MLflow ``experiment`` at ``tracking_uri`` into ``project`` (see the module docstring)."""
    if client is None:
        try:
            from mlflow.tracking import MlflowClient
        except ImportError:
            raise InputError({"tracking_uri": "needs the mlflow client: pip install mlflow-skinny"}) from None
        client = MlflowClient(tracking_uri=tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise InputError({"experiment": f"no experiment named {experiment!r} at {tracking_uri}"})
    summary = ImportSummary()
    token = None
    while True:
        page = client.search_runs([found.experiment_id], max_results=500, page_token=token)
        for mlflow_run in page:
            _import_run(user, project, tracking_uri, client, mlflow_run, summary)
        token = getattr(page, "token", None)
        if not token:
            return summary


def _import_run(
    user: AbstractBaseUser, project: Project, uri: str, client: Any, mlflow_run: Any, summary: ImportSummary
) -> None:
    source = f"{uri}#{mlflow_run.info.run_id}"
    run = Run.objects.filter(
        project=project, source=RunSource.EXTERNAL, **{f"config__tags__{IMPORTED_FROM}": source}
    ).first()
    if run is None:
        run = services.create_external_run(
            user=user,
            project=project,
            name=mlflow_run.info.run_name or "",
            config=dict(mlflow_run.data.params),
        )
        summary.created.append(run.id)
    else:
        summary.updated.append(run.id)
    services.set_labels(user=user, run=run, labels={**mlflow_run.data.tags, IMPORTED_FROM: source})
    points = []
    for key in mlflow_run.data.metrics:
        for metric in client.get_metric_history(mlflow_run.info.run_id, key):
            value = metric.value if math.isfinite(metric.value) else None
            points.append(Point(key, int(metric.step), value, metric.timestamp / 1000))
    summary.points += services.import_points(user=user, run=run, points=points)
    status = MLFLOW_TO_STATUS.get(mlflow_run.info.status)
    run.refresh_from_db()
    if status is not None and run.status in ACTIVE_STATUSES:
        services.finish(user=user, run=run, status=status)


def import_tensorboard(*, user: AbstractBaseUser, project: Project, log_dir: str) -> ImportSummary:
    """Import TensorBoard event files: each folder under ``log_dir`` holding some is one run.

    Read with the ``tensorboard`` package (scalars only: images, histograms and text are
    left out). A run is found again by its ``imported_from`` label (the folder's resolved
    path), and its points are upserted, so importing twice adds no run and no point.
    """
    try:
        from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator
    except ImportError:
        raise InputError({"dir": "needs the tensorboard package: pip install tensorboard"}) from None
    root = Path(log_dir).resolve()
    if not root.is_dir():
        raise InputError({"dir": f"{log_dir} is not a folder"})
    folders = sorted({p.parent for p in root.rglob("events.out.tfevents.*")})
    if not folders:
        raise InputError({"dir": f"no TensorBoard event files (events.out.tfevents.*) under {log_dir}"})
    summary = ImportSummary()
    for folder in folders:
        events = EventAccumulator(str(folder), size_guidance={SCALARS: 0})  # 0: keep every point
        events.Reload()
        source = f"tensorboard:{folder}"
        run = Run.objects.filter(
            project=project, source=RunSource.EXTERNAL, **{f"config__tags__{IMPORTED_FROM}": source}
        ).first()
        if run is None:
            name = str(folder.relative_to(root)) if folder != root else root.name
            run = services.create_external_run(user=user, project=project, name=name[:200])
            summary.created.append(run.id)
        else:
            summary.updated.append(run.id)
        services.set_labels(user=user, run=run, labels={IMPORTED_FROM: source})
        points = [
            Point(tag, int(e.step), e.value if math.isfinite(e.value) else None, e.wall_time)
            for tag in events.Tags().get(SCALARS, [])
            for e in events.Scalars(tag)
        ]
        summary.points += services.import_points(user=user, run=run, points=points)
        run.refresh_from_db()
        if run.status in ACTIVE_STATUSES:
            services.finish(user=user, run=run, status="completed")
    return summary
