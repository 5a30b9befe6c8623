"""Task names are names: jobs look tasks up in the registry; a path-like name is a 400 on ``tasks``.

Checked where jobs are created (form and API share the service), again by the worker
before it starts the evaluator, and by the evaluator itself (``--registry-only``).
"""

from __future__ import annotations

import pytest
from eval_fixtures import DOCS, TASK_YAML

from modelcore.evaluate import main as evaluate_main
from modelcore.evaluation.taskconfig import TaskConfigError, is_task_name, resolve_tasks
from webapp.evals import services
from webapp.evals.models import EvalJob, EvalStatus, ModelSource
from webapp.evals.services import ModelRef
from webapp.evals.sources import available_tasks
from webapp.input_errors import InputError
from workers.eval_jobs import EvalRunner, evaluate_command

pytestmark = pytest.mark.usefixtures("data_dir")

PATH_LIKE = [
    "../../etc/passwd",
    "/etc/passwd",
    "/tmp/task.yaml",
    "tasks/rw_arith.yaml",
    "..\\secret.yaml",
    "C:\\tasks\\t.yaml",
    ".hidden",
    "~/task.yaml",
    "rw_arith\x00.yaml",
    "rw..arith",
    "rw_arith,/tmp/task.yaml",
    "rw arith",
    "x" * 201,
]


@pytest.fixture
def task_yaml_on_disk(tmp_path):
    """A real, valid task YAML at an absolute path: what a path-like name would reach for."""
    folder = tmp_path / "elsewhere"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "test.jsonl").write_text(DOCS)
    path = folder / "outside.yaml"
    path.write_text(TASK_YAML)
    return path


@pytest.mark.parametrize("name", PATH_LIKE)
def test_path_like_names_are_not_task_names(name):
    assert not is_task_name(name)


@pytest.mark.parametrize(
    "name", ["rw_arith", "hellaswag", "bertaqa_en_mt_latxa-13b-v1.1", "longproc_countdown_0.5k"]
)
def test_lm_eval_style_names_are_task_names(name):
    assert is_task_name(name)


@pytest.mark.parametrize("name", PATH_LIKE)
def test_service_refuses_path_like_task_names_on_the_tasks_field(alice, project, run, name):
    with pytest.raises(InputError) as caught:
        services.create_eval_jobs(
            user=alice,
            project=project,
            models=[ModelRef.parse(f"ckpt:{run.id}:20")],
            tasks=["rw_arith", name],
        )
    assert set(caught.value.errors) == {"tasks"}
    assert "is not a task name" in caught.value.errors["tasks"]
    assert len(caught.value.errors["tasks"]) < 300  # a huge name is cut short in the message
    assert not EvalJob.objects.exists()


def test_api_answers_a_task_path_with_a_400_on_tasks(api, alice, run, project, task_yaml_on_disk):
    url = f"/api/v1/projects/{project.id}/evals"
    response = api(alice, "POST", url, {"models": [f"ckpt:{run.id}:20"], "tasks": [str(task_yaml_on_disk)]})
    assert response.status_code == 400, response.content
    assert "is not a task name" in response.json()["errors"]["tasks"]
    assert not EvalJob.objects.exists()


def test_a_path_like_shared_task_is_neither_offered_nor_accepted(
    client_for, alice, project, run, settings, tmp_path
):
    # An operator's shared folder holding a YAML whose task: is a path, beside a proper one.
    shared = tmp_path / "shared_tasks"
    shared.mkdir()
    (shared / "odd.yaml").write_text(TASK_YAML.replace("team_trivia", "../odd"))
    (shared / "fine.yaml").write_text(TASK_YAML)
    settings.EVAL_TASKS_DIR = shared
    offered = [task.name for task in available_tasks(project)]
    assert "team_trivia" in offered and "../odd" not in offered
    response = client_for(alice).post(
        f"/projects/{project.id}/evals/new", {"models": [f"ckpt:{run.id}:20"], "tasks": ["../odd"]}
    )
    assert response.status_code == 400
    assert response.context["form"].errors["tasks"]
    assert not EvalJob.objects.exists()


def test_worker_refuses_a_job_row_holding_a_path_before_starting_anything(
    project, alice, run, task_yaml_on_disk
):
    # A row written around the service (an old row, a direct database write) is checked again.
    job = EvalJob.objects.create(
        project=project,
        source=ModelSource.CHECKPOINT,
        run=run,
        checkpoint_step=20,
        tasks=["rw_arith", str(task_yaml_on_disk)],
        created_by=alice,
        status=EvalStatus.RUNNING,
    )
    with pytest.raises(TaskConfigError, match="tasks: .* is not a task name"):
        evaluate_command(job)
    assert EvalRunner(job).run_job() == EvalStatus.FAILED
    job.refresh_from_db()
    assert "Could not start the evaluator" in job.error and "is not a task name" in job.error
    assert job.pid is None


def test_worker_asks_the_evaluator_to_resolve_by_name_only(project, alice, run):
    job = EvalJob.objects.create(
        project=project,
        source=ModelSource.CHECKPOINT,
        run=run,
        checkpoint_step=20,
        tasks=["rw_arith"],
        created_by=alice,
    )
    argv = evaluate_command(job)
    assert argv[argv.index("--tasks") + 1] == "rw_arith" and "--registry-only" in argv


def test_registry_only_resolution_never_reads_a_path(task_yaml_on_disk):
    # The CLI used by hand keeps lm-eval's habit of accepting a YAML path...
    assert [c.task for c in resolve_tasks([str(task_yaml_on_disk)])] == ["team_trivia"]
    # ...the web's workers do not, even for a file that exists and parses.
    with pytest.raises(TaskConfigError, match="--tasks: .* is not a task name"):
        resolve_tasks([str(task_yaml_on_disk)], registry_only=True)
    assert [c.task for c in resolve_tasks(["rw_arith"], registry_only=True)] == ["rw_arith"]


def test_evaluator_cli_with_registry_only_refuses_a_path_before_loading_a_model(
    task_yaml_on_disk, tmp_path, capsys
):
    code = evaluate_main(
        ["--model", str(tmp_path / "no-model"), "--tasks", str(task_yaml_on_disk), "--registry-only"]
    )
    assert code == 2
    assert "is not a task name" in capsys.readouterr().err
