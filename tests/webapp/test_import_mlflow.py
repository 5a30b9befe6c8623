"""``manage.py import_mlflow``: an MLflow experiment (a file store written by the real client) imported twice."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from webapp.metrics.models import MetricPoint
from webapp.runs.models import Run, RunSource, RunStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def mlflow_store(tmp_path, monkeypatch) -> str:
    mlflow = pytest.importorskip("mlflow")
    # MLflow 3 keeps its file store for reading old runs (the history a team moves over).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    uri = f"file:{tmp_path / 'mlruns'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment("old-experiments")
    with mlflow.start_run(run_name="baseline"):
        mlflow.log_params({"lr": 0.01, "layers": 4})
        mlflow.set_tag("team", "ml")
        for step in range(50):
            mlflow.log_metrics({"loss": 3.0 / (step + 1), "acc": step / 50}, step=step)
    mlflow.set_tracking_uri("")
    return uri


def test_an_experiment_is_imported_once_however_often_the_command_runs(mlflow_store, project, capsys):
    for _ in range(2):
        call_command(
            "import_mlflow",
            "--tracking-uri",
            mlflow_store,
            "--experiment",
            "old-experiments",
            "--project",
            "llm",
        )
    assert "0 runs created, 1 updated" in capsys.readouterr().out
    (run,) = Run.objects.filter(project=project)
    assert run.source == RunSource.EXTERNAL and run.name == "baseline" and run.status == RunStatus.COMPLETED
    assert run.config["params"] == {"lr": "0.01", "layers": "4"} and run.config["tags"]["team"] == "ml"
    assert MetricPoint.objects.filter(run=run).count() == 100
    assert dict(MetricPoint.objects.filter(run=run, key="loss").values_list("step", "value"))[49] == 3.0 / 50
    assert run.step == 49


def test_a_missing_experiment_or_project_is_a_clear_error(mlflow_store, project):
    with pytest.raises(CommandError, match="no experiment named"):
        call_command(
            "import_mlflow", "--tracking-uri", mlflow_store, "--experiment", "nope", "--project", "llm"
        )
    with pytest.raises(CommandError, match="no such project"):
        call_command(
            "import_mlflow", "--tracking-uri", mlflow_store, "--experiment", "x", "--project", "none"
        )
