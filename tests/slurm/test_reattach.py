"""A restarted worker takes back its run's Slurm job: the job outlives the killed worker, the worker
that starts again watches that job (no second submission) and the run completes with every point.

The fencing of the take-back is tested on its own first (no cluster needed): a run relaunched
meanwhile, a second delivery, and a lost run taken back to running.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import service_processes
from django.conf import settings
from django.utils import timezone

from modelcore.config import preset
from webapp.accounts.models import Team
from webapp.metrics.models import MetricPoint
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from workers.slurm import query_state
from workers.slurm_reattach import runs_to_reattach, take_back
from workers.tasks import launch_run

DEADLINE_SECONDS = 300
MAX_STEPS = 300


def tiny_config(**train) -> dict:
    config = preset("tiny-cpu").to_dict()
    config["parallel"] |= {"num_processes": 2, "device": "cpu"}
    config["optim"]["warmup_steps"] = 2
    config["train"] |= {
        "max_steps": MAX_STEPS,
        "log_every": 1,
        "eval_every": 0,
        "checkpoint_every": 0,
        **train,
    }
    return config


def project() -> Project:
    return Project.objects.create(
        team=Team.objects.create(name=f"slurm-{uuid.uuid4().hex[:6]}"), name="slurm"
    )


def claimed(worker: str, job_id: str = "4242") -> Run:
    run = Run.objects.create(project=project(), name="on slurm", preset="tiny-cpu", config=tiny_config())
    run = transitions.claim_for_launch(run.id, worker)
    Run.objects.filter(pk=run.pk).update(slurm_job_id=job_id)
    return Run.objects.get(pk=run.pk)


# --- the take-back's fence -------------------------------------------------------------------


@pytest.mark.django_db
def test_a_worker_finds_only_its_own_runs_with_a_slurm_job():
    mine = claimed("celery@a")
    claimed("celery@b")
    local = claimed("celery@a", job_id="")
    done = claimed("celery@a", job_id="77")
    transitions.finish(done.id, done.attempt, RunStatus.COMPLETED)
    found = runs_to_reattach("celery@a")
    assert [(r, a, j) for r, a, j, _ in found] == [(mine.id, mine.attempt, "4242")]
    assert local.id not in [r for r, *_ in found]


@pytest.mark.django_db
def test_a_run_is_taken_back_once_and_a_lost_one_runs_again():
    run = claimed("celery@a")
    (seen,) = runs_to_reattach("celery@a")
    assert take_back(*seen, "celery@a2") is not None
    assert take_back(*seen, "celery@a3") is None  # a second delivery: the heartbeat moved
    assert Run.objects.get(pk=run.pk).worker == "celery@a2"

    lost = claimed("celery@c")
    transitions.mark_lost_runs(dt.timedelta(seconds=60), now=timezone.now() + dt.timedelta(hours=1))
    assert Run.objects.get(pk=lost.pk).status == RunStatus.LOST
    (seen,) = runs_to_reattach("celery@c")
    taken = take_back(*seen, "celery@c")
    assert taken is not None and taken.status == RunStatus.RUNNING and taken.error == ""


@pytest.mark.django_db
def test_a_run_relaunched_meanwhile_is_not_taken_back():
    run = claimed("celery@a")
    (seen,) = runs_to_reattach("celery@a")
    transitions.finish(run.id, run.attempt, RunStatus.FAILED, "stopped")
    transitions.queue_again(run.id, "resume")
    assert transitions.claim_for_launch(run.id, "celery@other") is not None  # attempt 2 elsewhere
    assert take_back(*seen, "celery@a") is None
    assert Run.objects.get(pk=run.pk).worker == "celery@other"


# --- a real worker killed and started again --------------------------------------------------


@pytest.fixture
def runs_dir() -> Path:
    """The worker's run directories (overrides the per-test folder: the worker shares them with us)."""
    return settings.RUNS_DIR


@contextlib.contextmanager
def slurm_worker(log_path: Path, queue: str, hostname: str, cluster):
    """A ready ``celery -A workers worker`` on the Slurm launcher, under a fixed node name."""
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue, "--concurrency", "1"]
    argv += ["--loglevel", "info", "--hostname", hostname, "--without-gossip", "--without-mingle"]
    env = service_processes.service_env(
        RUNWRIGHT_LAUNCHER="slurm", RUNWRIGHT_HEARTBEAT_SECONDS="1", **cluster.env
    )
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            cwd=service_processes.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        service_processes.wait_for_text(log_path, " ready.", proc, "celery worker")
        yield proc
    finally:
        service_processes.stop_group(proc)


def wait_for(condition, what: str, log_path: Path, cluster, timeout: float = DEADLINE_SECONDS):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(
        f"timed out waiting for {what}\n{log_path.read_text(errors='replace')[-6000:]}\n{cluster.logs()}"
    )


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_a_restarted_worker_takes_back_the_job_and_the_run_completes_with_every_point(slurm, tmp_path):
    queue = f"slurm-{uuid.uuid4().hex[:8]}"
    hostname = f"{queue}@{os.uname().nodename}"
    log_path = tmp_path / "worker.log"
    run = Run.objects.create(
        project=project(), name="outlives its worker", preset="tiny-cpu", config=tiny_config()
    )

    with slurm_worker(log_path, queue, hostname, slurm) as first:
        launch_run.apply_async((run.id,), queue=queue)
        job_id = wait_for(
            lambda: Run.objects.filter(pk=run.id, step__gte=3).values_list("slurm_job_id", flat=True).first(),
            "the run to train on Slurm",
            log_path,
            slurm,
        )
        os.killpg(first.pid, signal.SIGKILL)  # the worker and its supervisor, not the job
        first.wait()
    state = query_state(job_id)
    assert state is not None and state[0] == "RUNNING", state
    killed_at = Run.objects.get(pk=run.id).step
    assert killed_at < MAX_STEPS, "the run ended before its worker was killed: raise MAX_STEPS"

    with slurm_worker(log_path, queue, hostname, slurm):
        wait_for(
            lambda: f"took back Slurm job {job_id}" in log_path.read_text(errors="replace"),
            "the restarted worker to take the job back",
            log_path,
            slurm,
        )
        # Taken back while it still trains: the new supervisor watches a live job.
        assert query_state(job_id)[0] == "RUNNING"
        print(f"killed at step {killed_at}, taken back at {Run.objects.get(pk=run.id).step} of {MAX_STEPS}")
        done = wait_for(
            lambda: Run.objects.filter(pk=run.id, status__in=(RunStatus.COMPLETED, RunStatus.FAILED)).first(),
            "the taken-back run to end",
            log_path,
            slurm,
        )
    assert done.status == RunStatus.COMPLETED, done.error + log_path.read_text(errors="replace")[-4000:]
    assert done.slurm_job_id == job_id and done.attempt == 1  # watched again, never submitted again
    assert done.slurm_state == "COMPLETED" and done.step == MAX_STEPS
    steps = (
        MetricPoint.objects.filter(run=run, key="train/loss").order_by("step").values_list("step", flat=True)
    )
    assert list(steps) == list(range(1, MAX_STEPS + 1))
