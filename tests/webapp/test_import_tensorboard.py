"""``manage.py import_tensorboard DIR --project P``: event files written by torch's SummaryWriter, imported twice."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from webapp.metrics.models import MetricPoint
from webapp.runs.models import Run, RunStatus

pytestmark = pytest.mark.django_db


@pytest.fixture
def logs(tmp_path):
    pytest.importorskip("tensorboard")
    from torch.utils.tensorboard import SummaryWriter

    for name, scale in (("run-a", 1.0), ("run-b", 2.0)):
        with SummaryWriter(str(tmp_path / "tb" / name)) as writer:
            for step in range(30):
                writer.add_scalar("train/loss", scale / (step + 1), step)
                writer.add_scalar("lr", 0.001, step)
    return tmp_path / "tb"


def test_each_folder_is_one_run_and_a_second_import_adds_nothing(logs, project, capsys):
    for _ in range(2):
        call_command("import_tensorboard", str(logs), "--project", str(project.id))
    assert "0 runs created, 2 updated, 120 points written" in capsys.readouterr().out
    runs = {run.name: run for run in Run.objects.filter(project=project)}
    assert sorted(runs) == ["run-a", "run-b"]
    assert all(run.status == RunStatus.COMPLETED and run.step == 29 for run in runs.values())
    assert MetricPoint.objects.filter(run__project=project).count() == 120
    loss = dict(MetricPoint.objects.filter(run=runs["run-b"], key="train/loss").values_list("step", "value"))
    assert loss[0] == 2.0 and loss[29] == pytest.approx(2.0 / 30)


def test_a_folder_without_event_files_is_a_clear_error(tmp_path, project):
    pytest.importorskip("tensorboard")
    with pytest.raises(CommandError, match="no TensorBoard event files"):
        call_command("import_tensorboard", str(tmp_path), "--project", "llm")
