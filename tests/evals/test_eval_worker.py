"""Eval jobs on workers: the real evaluator as a subprocess, progress, cancel, time limit, errors,
and a real ``celery -A workers worker`` running a periodic eval whose scores become run metric points."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import psutil
import pytest
from service_processes import celery_worker
from tiny_models import make_hf_llama, make_run_checkpoint

from modelcore.config import resolve
from webapp.evals.models import EvalJob, EvalStatus, ModelSource
from webapp.metrics.models import MetricPoint
from webapp.runs.models import Run, RunStatus
from workers.eval_jobs import EvalRunner, evaluate_command, run_eval_job, schedule_periodic_evals


@pytest.fixture(scope="module")
def hf_models_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("models")
    make_hf_llama(root / "tiny-llama")
    return root


@pytest.fixture
def hf_job(data_dir, settings, hf_models_dir, project, alice):
    settings.MODELS_DIR = hf_models_dir

    def make(**fields) -> EvalJob:
        values = {"tasks": ["rw_arith", "rw_facts"], "limit": 6, **fields}
        return EvalJob.objects.create(
            project=project,
            source=ModelSource.HF,
            hf_path="tiny-llama",
            label="tiny-llama",
            created_by=alice,
            **values,
        )

    return make


def test_evaluator_runs_as_a_subprocess_and_results_are_stored(hf_job, client_for, bob):
    job = hf_job()
    started = time.monotonic()
    assert run_eval_job(job.id) == EvalStatus.COMPLETED
    elapsed = time.monotonic() - started
    job.refresh_from_db()
    assert job.status == EvalStatus.COMPLETED and job.progress == 1.0 and job.error == ""
    assert job.has_samples and "samples" not in job.results
    full = json.loads(job.results_file.read_text())
    for task in ("rw_arith", "rw_facts"):
        entry = job.results["results"][task]
        samples = full["samples"][task]
        assert len(samples) == 6
        # The stored score is the mean of the per-sample records the evaluator wrote.
        assert entry["acc,none"] == pytest.approx(sum(s["metrics"]["acc"] for s in samples) / 6)
    # The evaluator reported its progress through the log the runner tails.
    events = [json.loads(line) for line in job.log_file.read_text().splitlines() if line.startswith("{")]
    assert {"task_start", "progress", "task_end"} <= {e["event"] for e in events}
    page = client_for(bob).get(f"/evals/{job.id}/")
    assert page.status_code == 200 and b"rw_facts" in page.content and b"Results JSON" in page.content
    print(f"eval job of 2 tasks x 6 docs on a tiny HF Llama: {elapsed:.1f} s")


def test_second_delivery_of_a_finished_job_does_nothing(hf_job):
    job = hf_job(status=EvalStatus.COMPLETED)
    assert run_eval_job(job.id) is None
    assert EvalJob.objects.get(pk=job.id).status == EvalStatus.COMPLETED


def test_cancel_stops_the_evaluator_process_group(hf_job):
    job = hf_job()
    EvalJob.objects.filter(pk=job.pk).update(status=EvalStatus.RUNNING)
    EvalJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    job.refresh_from_db()
    runner = EvalRunner(job)
    assert runner.run_job() == EvalStatus.CANCELLED
    assert not psutil.pid_exists(runner.proc.pid) or psutil.Process(runner.proc.pid).status() == "zombie"
    job.refresh_from_db()
    assert job.status == EvalStatus.CANCELLED and job.finished_at is not None


def test_time_limit_stops_and_fails_the_job(hf_job):
    job = hf_job()
    EvalJob.objects.filter(pk=job.pk).update(status=EvalStatus.RUNNING)
    job.refresh_from_db()
    assert EvalRunner(job, time_limit=0.5).run_job() == EvalStatus.FAILED
    job.refresh_from_db()
    assert "time limit" in job.error


def test_evaluator_errors_are_shown_on_the_job(hf_job):
    job = hf_job(
        tasks=["rw_arith", "no_such_task"]
    )  # bypasses the form's check, as a stale task folder would
    assert run_eval_job(job.id) == EvalStatus.FAILED
    job.refresh_from_db()
    assert "exited with code 2" in job.error and "no_such_task" in job.error


def test_command_is_an_argument_list_with_the_project_task_folders(hf_job, project):
    from webapp.evals.sources import project_tasks_dir

    project_tasks_dir(project).mkdir(parents=True)
    argv = evaluate_command(hf_job(num_fewshot=2))
    assert argv[:3] == [sys.executable, "-m", "modelcore.evaluate"]
    assert argv[argv.index("--tasks") + 1] == "rw_arith,rw_facts"
    assert argv[argv.index("--tasks-dir") + 1] == str(project_tasks_dir(project))
    assert argv[argv.index("--num-fewshot") + 1] == "2" and argv[argv.index("--limit") + 1] == "6"


# --- a real Celery worker --------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_celery_worker_runs_a_periodic_eval_into_run_metric_points(tmp_path, project, alice):
    config = resolve("tiny-cpu", {"eval": {"tasks": "rw_facts", "every": 10, "limit": 5}}).to_dict()
    run = Run.objects.create(
        project=project,
        name="periodic",
        preset="tiny-cpu",
        config=config,
        status=RunStatus.RUNNING,
        created_by=alice,
    )
    make_run_checkpoint(run.run_dir, config, step=20)
    with celery_worker(tmp_path / "worker.log"):
        started = time.monotonic()
        job_id = schedule_periodic_evals(run.id, 20)  # what the supervisor calls on a checkpoint event
        assert job_id is not None
        assert schedule_periodic_evals(run.id, 20) is None  # the event read twice
        deadline = time.monotonic() + 120
        seen_running = False
        while True:
            job = EvalJob.objects.get(pk=job_id)
            seen_running |= job.status == EvalStatus.RUNNING
            if not job.is_active or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        elapsed = time.monotonic() - started
    assert job.status == EvalStatus.COMPLETED, job.error
    assert seen_running and job.worker
    acc = job.results["results"]["rw_facts"]["acc,none"]
    points = {p.key: p for p in MetricPoint.objects.filter(run=run, step=20)}
    assert points["eval/rw_facts/acc"].value == pytest.approx(acc)
    assert "eval/rw_facts/acc_stderr" in points and "eval/rw_facts/acc_norm" in points
    print(f"periodic eval through a real worker: {elapsed:.1f} s")
