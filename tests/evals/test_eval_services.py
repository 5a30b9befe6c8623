"""Writes for eval jobs and reports: roles, validation, periodic scheduling, imports, task uploads."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from django.core.exceptions import PermissionDenied
from eval_fixtures import DOCS, TASK_YAML, mc_samples, results_payload

from webapp.evals import services
from webapp.evals.models import EvalJob, EvalStatus, ModelSource
from webapp.evals.services import ModelRef
from webapp.evals.sources import available_tasks, project_tasks_dir
from webapp.evals.taskupload import TaskUploadError, install_task_zip
from webapp.input_errors import InputError

pytestmark = pytest.mark.usefixtures("data_dir")


def test_member_creates_one_queued_job_per_checkpoint(
    alice, project, run, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        jobs = services.create_eval_jobs(
            user=alice,
            project=project,
            models=[ModelRef.parse(f"ckpt:{run.id}:20"), ModelRef.parse(f"ckpt:{run.id}:40")],
            tasks=["rw_arith", "rw_facts"],
            limit=5,
            report_name="arith vs facts",
        )
    assert [(j.checkpoint_step, j.status, j.tasks) for j in jobs] == [
        (20, EvalStatus.QUEUED, ["rw_arith", "rw_facts"]),
        (40, EvalStatus.QUEUED, ["rw_arith", "rw_facts"]),
    ]
    assert len(callbacks) == 2  # one enqueue per job, after commit
    assert set(project.eval_reports.get().jobs.all()) == set(jobs)


def test_viewer_cannot_create_eval_jobs(bob, project, run):
    with pytest.raises(PermissionDenied, match="member role"):
        services.create_eval_jobs(
            user=bob, project=project, models=[ModelRef.parse(f"ckpt:{run.id}:20")], tasks=["rw_arith"]
        )
    assert not EvalJob.objects.exists()


@pytest.mark.parametrize(
    ("tasks", "options", "field"),
    [
        ([], {}, "tasks"),
        (["no_such_task"], {}, "tasks"),
        (["rw_arith"], {"num_fewshot": 65}, "num_fewshot"),
        (["rw_arith"], {"limit": 0}, "limit"),
    ],
)
def test_bad_options_name_the_field(alice, project, run, tasks, options, field):
    with pytest.raises(InputError) as exc:
        services.create_eval_jobs(
            user=alice, project=project, models=[ModelRef.parse(f"ckpt:{run.id}:20")], tasks=tasks, **options
        )
    assert field in exc.value.errors


def test_checkpoint_of_another_project_or_missing_step_is_refused(alice, project, run, charlie):
    with pytest.raises(InputError, match="no checkpoint at step 30"):
        services.create_eval_jobs(
            user=alice, project=project, models=[ModelRef.parse(f"ckpt:{run.id}:30")], tasks=["rw_arith"]
        )


@pytest.mark.parametrize("path", ["../runs/1", "/etc", "missing-model"])
def test_hf_paths_must_be_model_folders_inside_the_models_folder(alice, project, path):
    with pytest.raises(InputError) as exc:
        services.create_eval_jobs(
            user=alice, project=project, models=[ModelRef.parse(f"hf:{path}")], tasks=["rw_arith"]
        )
    assert "models" in exc.value.errors


def test_bad_model_choice_value_is_a_field_error():
    with pytest.raises(InputError) as exc:
        ModelRef.parse("ckpt:abc")
    assert "models" in exc.value.errors


def test_cancel_of_a_queued_job_is_immediate(alice, project, run):
    job = EvalJob.objects.create(
        project=project, source=ModelSource.CHECKPOINT, run=run, checkpoint_step=20, tasks=["rw_arith"]
    )
    job = services.request_eval_cancel(user=alice, job=job)
    assert job.status == EvalStatus.CANCELLED and job.finished_at is not None


def _eval_config(run, tasks="rw_arith", every=20, max_steps=60):
    config = dict(run.config)
    config["eval"] = {"tasks": tasks, "every": every, "limit": 4}
    config["train"] = {**config["train"], "max_steps": max_steps}
    run.config = config
    run.save()


def test_periodic_evals_follow_eval_every_and_schedule_once(run):
    _eval_config(run, every=20, max_steps=100)
    assert services.schedule_periodic_eval(run.id, 10) is None  # before the first interval
    job = services.schedule_periodic_eval(run.id, 25)
    assert job is not None and job.periodic and job.checkpoint_step == 25 and job.limit == 4
    assert services.schedule_periodic_eval(run.id, 25) is None  # the same event read twice
    assert services.schedule_periodic_eval(run.id, 30) is None  # same interval as step 25
    assert services.schedule_periodic_eval(run.id, 40) is not None
    assert services.schedule_periodic_eval(run.id, 100).checkpoint_step == 100  # the final checkpoint


def test_periodic_eval_every_zero_runs_only_at_the_end(run):
    _eval_config(run, every=0, max_steps=60)
    assert services.schedule_periodic_eval(run.id, 40) is None
    assert services.schedule_periodic_eval(run.id, 60) is not None


def test_run_without_eval_tasks_schedules_nothing(run):
    _eval_config(run, tasks="", every=10)
    assert services.schedule_periodic_eval(run.id, 20) is None


def test_periodic_eval_of_unknown_task_is_recorded_as_failed(run):
    _eval_config(run, tasks="rw_arith,nope", every=10)
    job = services.schedule_periodic_eval(run.id, 20)
    assert job.status == EvalStatus.FAILED and "nope" in job.error


def test_import_of_lm_eval_results_with_sample_files(alice, project):
    payload = results_payload({"arc_easy": {"acc": 0.6, "acc_stderr": 0.05, "acc_norm": 0.55}}, n_shot=5)
    payload["config"] = {"model": "hf", "model_args": "pretrained=EleutherAI/pythia-70m"}
    lines = [
        json.dumps(
            {
                "doc_id": i,
                "target": 0,
                "filtered_resps": [[str(-1.0 - i), "False"], ["-2.0", "False"]],
                "arguments": {"gen_args_0": {"arg_0": f"Q{i}", "arg_1": " a"}},
                "metrics": ["acc", "acc_norm"],
                "acc": 1.0,
                "acc_norm": 0.0,
            }
        )
        for i in range(3)
    ]
    job = services.import_results(
        user=alice,
        project=project,
        results_text=json.dumps(payload),
        sample_files=[("samples_arc_easy_2025-01-02T03-04-05.123456.jsonl", "\n".join(lines))],
    )
    assert job.status == EvalStatus.COMPLETED and job.source == ModelSource.IMPORTED
    assert job.tasks == ["arc_easy"] and job.num_fewshot == 5 and job.has_samples
    assert job.label == "pretrained=EleutherAI/pythia-70m"
    assert "samples" not in job.results
    stored = json.loads(job.results_file.read_text())["samples"]["arc_easy"]
    assert stored[1]["metrics"] == {"acc": 1.0, "acc_norm": 0.0}
    assert stored[1]["prediction"] == 0 and stored[1]["prompt"] == "Q1"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"foo": 1}', "results: missing"),
        ('{"results": {"t": {"x,none": "a"}}}', "no numeric metric"),
    ],
)
def test_import_of_a_bad_file_is_a_field_error(alice, project, text, message):
    with pytest.raises(InputError, match=message) as exc:
        services.import_results(user=alice, project=project, results_text=text)
    assert "results_file" in exc.value.errors


def test_sample_file_for_an_unknown_task_is_refused(alice, project):
    payload = results_payload({"t1": {"acc": 0.5}})
    with pytest.raises(InputError, match="not an lm-eval sample log"):
        services.import_results(
            user=alice,
            project=project,
            results_text=json.dumps(payload),
            sample_files=[("samples_t1_2025-01-01T00-00-00.0.jsonl", '{"no_doc_id": 1}')],
        )
    with pytest.raises(InputError, match="names no task"):
        services.import_results(
            user=alice,
            project=project,
            results_text=json.dumps(payload),
            sample_files=[("samples_other_2025-01-01T00-00-00.0.jsonl", "")],
        )


def test_reports_only_take_jobs_of_their_project(alice, project, run, charlie):
    from webapp.projects.models import Project

    theirs = Project.objects.create(team=charlie.memberships.get().team, name="x")
    foreign = EvalJob.objects.create(
        project=theirs,
        source=ModelSource.IMPORTED,
        tasks=["t"],
        status=EvalStatus.COMPLETED,
        results=results_payload({"t": {"acc": 1.0}}),
    )
    with pytest.raises(InputError, match="not in this project"):
        services.create_report(user=alice, project=project, name="r", job_ids=[foreign.id])
    mine = EvalJob.objects.create(
        project=project,
        source=ModelSource.IMPORTED,
        tasks=["t"],
        status=EvalStatus.COMPLETED,
        results=results_payload({"t": {"acc": 1.0}}),
    )
    with pytest.raises(InputError, match="name"):
        services.create_report(user=alice, project=project, name=" ", job_ids=[mine.id])
    assert services.create_report(user=alice, project=project, name="r", job_ids=[mine.id]).jobs.get() == mine
    assert mc_samples([1])[0]["metrics"]["acc"] == 1.0


# --- task uploads --------------------------------------------------------------


def _zip(files: dict[str, str]) -> io.BytesIO:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for name, text in files.items():
            z.writestr(name, text)
    buf.seek(0)
    return buf


def _install(project, files):
    buf = _zip(files)
    return install_task_zip(project, buf, "trivia.zip", len(buf.getvalue()))


def test_uploaded_task_folder_is_installed_for_its_project_only(project, alice, charlie):
    names = _install(project, {"trivia/team_trivia.yaml": TASK_YAML, "trivia/data/test.jsonl": DOCS})
    assert names == ["team_trivia"]
    assert (project_tasks_dir(project) / "trivia" / "data" / "test.jsonl").is_file()
    by_name = {t.name: t.origin for t in available_tasks(project)}
    assert by_name["team_trivia"] == "uploaded" and by_name["rw_arith"] == "built-in"
    assert "team_trivia" not in {t.name for t in available_tasks(project.id + 1000)}


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"../evil.yaml": TASK_YAML}, "inside the folder"),
        ({"t/hook.py": "import os", "t/a.yaml": TASK_YAML}, "only task YAML and data"),
        ({"t/a.yaml": "task: [unclosed"}, "not valid YAML"),
        (
            {"t/a.yaml": TASK_YAML.replace("output_type: multiple_choice", "output_type: telepathy")},
            "output_type",
        ),
        ({"t/a.yaml": TASK_YAML.replace("data/test.jsonl", "/etc/passwd")}, "inside the uploaded folder"),
        (
            {"t/a.yaml": TASK_YAML.replace("data/test.jsonl", "../../secret.jsonl")},
            "inside the uploaded folder",
        ),
        ({"t/a.yaml": TASK_YAML.replace("team_trivia", "rw_arith"), "t/data/test.jsonl": DOCS}, "built-in"),
        (
            {"t/a.yaml": TASK_YAML + "process_results: !function utils.score\n", "t/data/test.jsonl": DOCS},
            "process_results",
        ),
        ({"t/readme.md": "hi"}, "no task YAML"),
    ],
)
def test_bad_task_uploads_are_refused_and_leave_nothing_behind(project, files, message):
    with pytest.raises(TaskUploadError, match=message):
        _install(project, files)
    root = project_tasks_dir(project)
    assert not root.exists() or not any(p for p in root.iterdir())


def test_symlink_members_are_refused(project):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        info = zipfile.ZipInfo("t/link.yaml")
        info.external_attr = 0o120777 << 16
        z.writestr(info, "/etc/passwd")
    buf.seek(0)
    with pytest.raises(TaskUploadError, match="links"):
        install_task_zip(project, buf, "t.zip", len(buf.getvalue()))


def test_oversized_zip_is_refused_before_reading(project, settings):
    settings.EVAL_TASK_UPLOAD_MAX_BYTES = 100
    with pytest.raises(TaskUploadError, match="limit"):
        install_task_zip(project, io.BytesIO(b"x" * 200), "t.zip", 200)


# --- real files: lm-eval 0.4 (HF backend) and our evaluator on the same tiny model, task rw_facts, limit 8 ---

DATA = Path(__file__).with_name("data")
LM_EVAL_SAMPLES = "samples_rw_facts_2026-11-25T20-17-36.170579.jsonl"


def test_real_lm_eval_and_runwright_files_import_and_compare_as_equal(alice, project, client_for):
    lm = services.import_results(
        user=alice,
        project=project,
        label="lm-eval",
        results_text=(DATA / "lm_eval_results_rw_facts.json").read_text(),
        sample_files=[(LM_EVAL_SAMPLES, (DATA / LM_EVAL_SAMPLES).read_text())],
    )
    ours = services.import_results(
        user=alice,
        project=project,
        label="runwright",
        results_text=(DATA / "runwright_results_rw_facts.json").read_text(),
    )
    assert lm.has_samples and ours.has_samples
    lm_samples = json.loads(lm.results_file.read_text())["samples"]["rw_facts"]
    assert lm_samples[0]["loglikelihoods"] == pytest.approx(
        [-28.5109, -28.2482, -28.3938, -39.7656], abs=1e-4
    )
    assert lm_samples[0]["gold"] == "0" and lm_samples[0]["prediction"] == 1
    report = services.create_report(user=alice, project=project, name="parity", job_ids=[lm.id, ours.id])
    response = client_for(alice).get(f"/reports/{report.id}/?a={lm.id}&b={ours.id}")
    row = response.context["data"].tasks[0]
    assert (row.task, row.metric) == ("rw_facts", "acc")
    assert row.cells[0].value == row.cells[1].value == 0.375
    assert row.cells[0].best and row.cells[1].best  # a tie marks both
    pair = response.context["pair"][0]
    assert pair.n == 8 and pair.mcnemar.only_a == pair.mcnemar.only_b == 0 and pair.bootstrap.difference == 0
    disagree = client_for(alice).get(
        f"/reports/{report.id}/disagreements?a={lm.id}&b={ours.id}&task=rw_facts"
    )
    assert disagree.context["differing"] == 0 and disagree.context["shared"] == 8


def test_running_jobs_without_a_heartbeat_are_failed_by_the_sweep(project, run):
    import datetime as dt

    from django.utils import timezone

    from webapp.evals.transitions import JOBS

    old = timezone.now() - dt.timedelta(minutes=10)
    stale = EvalJob.objects.create(
        project=project,
        source=ModelSource.CHECKPOINT,
        run=run,
        checkpoint_step=20,
        tasks=["rw_arith"],
        status=EvalStatus.RUNNING,
        heartbeat_at=old,
    )
    fresh = EvalJob.objects.create(
        project=project,
        source=ModelSource.CHECKPOINT,
        run=run,
        checkpoint_step=40,
        tasks=["rw_arith"],
        status=EvalStatus.RUNNING,
        heartbeat_at=timezone.now(),
    )
    assert JOBS.fail_stale_jobs(60) == [stale.id]
    stale.refresh_from_db()
    fresh.refresh_from_db()
    assert stale.status == EvalStatus.FAILED and "stopped responding" in stale.error
    assert fresh.status == EvalStatus.RUNNING


def test_periodic_eval_results_become_run_metric_points(project, run):
    from webapp.evals.transitions import finish
    from webapp.metrics.models import MetricPoint

    job = EvalJob.objects.create(
        project=project,
        source=ModelSource.CHECKPOINT,
        run=run,
        checkpoint_step=40,
        tasks=["rw_arith"],
        status=EvalStatus.RUNNING,
        periodic=True,
    )
    results = results_payload({"rw_arith": {"acc": 0.4, "acc_stderr": 0.1}})
    assert finish(job.id, EvalStatus.COMPLETED, results=results)
    assert not finish(job.id, EvalStatus.FAILED, error="late")  # a finished job is not overwritten
    points = {p.key: p.value for p in MetricPoint.objects.filter(run=run, step=40)}
    assert points == {"eval/rw_arith/acc": 0.4, "eval/rw_arith/acc_stderr": 0.1}


# --- sending the job's task (by name: the web never imports workers) ---------------------


def _queue_one(alice, project, run):
    return services.create_eval_jobs(
        user=alice, project=project, models=[ModelRef.parse(f"ckpt:{run.id}:20")], tasks=["rw_arith"]
    )[0]


def test_a_job_is_sent_by_task_name_after_commit(
    alice, project, run, sent_tasks, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        job = _queue_one(alice, project, run)
    assert sent_tasks == []  # nothing before the row is committed
    callbacks[0]()
    assert sent_tasks == [("workers.eval_jobs.run_eval_job", (job.id,), None)]


def test_eval_queue_routes_jobs_to_their_own_queue(
    alice, project, run, sent_tasks, settings, django_capture_on_commit_callbacks
):
    settings.EVAL_QUEUE = "evals"
    with django_capture_on_commit_callbacks(execute=True):
        job = _queue_one(alice, project, run)
    assert sent_tasks == [("workers.eval_jobs.run_eval_job", (job.id,), "evals")]


def test_a_broker_failure_fails_the_job_instead_of_leaving_it_queued(alice, project, run, monkeypatch):
    from webapp import enqueue

    def unreachable(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(enqueue.app, "send_task", unreachable)
    job = _queue_one(alice, project, run)
    from webapp.evals.transitions import JOBS

    JOBS.send(job.id)
    job.refresh_from_db()
    assert job.status == EvalStatus.FAILED and "Could not queue the eval job: broker unreachable" in job.error
