"""Several hosts simulated as several real Celery workers on this machine, with the fleet on.

Each worker has its own queue, lock folder and a declared fake GPU inventory
(``RUNWRIGHT_GPUS`` + ``RUNWRIGHT_GPU_MODEL``); it registers and beats like a GPU host. The
runs are real tiny-CPU trainings of one process each (``device auto`` with a leased fake GPU
trains on CPU here). Launches take the web's path: ``create_run``'s send goes to the
scheduler task on its queue, which places the run and sends its launch to the host's queue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import service_processes
from django.conf import settings
from django.contrib.auth import get_user_model

from webapp.accounts.models import Role, Team
from webapp.accounts.services import add_member
from webapp.fleet.models import Host, Placement
from webapp.projects.models import Project
from webapp.runs.models import FINAL_STATUSES, AttemptKind, Run, RunAttempt, RunStatus
from webapp.runs.services import create_run
from workers import sweep

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

TIMEOUT_S = 240


@pytest.fixture(scope="module")
def corpus_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fleet-corpus-cache")


@pytest.fixture
def scheduler_queue(settings) -> str:
    """The web's launches go to the scheduler task on a queue of this test's own."""
    queue = f"sched-{uuid.uuid4().hex[:8]}"
    settings.FLEET_ENABLED = True
    settings.SCHEDULER_QUEUE = queue
    settings.FLEET_HOST_LOST_SECONDS = 4
    return queue


@pytest.fixture
def runs_dir():
    return settings.RUNS_DIR  # shared with the workers


@contextlib.contextmanager
def fleet_worker(
    tmp_path: Path, name: str, gpus: str, model: str, scheduler_queue: str, cache: Path
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A worker playing one GPU host; yields (its registered name, its process)."""
    node = f"{name}-{uuid.uuid4().hex[:6]}"
    hostname = f"{node}@fleet"
    host_queue = f"host-{node}"
    log_path = tmp_path / f"{node}.log"
    argv = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "workers",
        "worker",
        "-Q",
        f"{host_queue},{scheduler_queue}",
    ]
    argv += [
        "--concurrency",
        "2",
        "--loglevel",
        "info",
        "--hostname",
        hostname,
        "--without-gossip",
        "--without-mingle",
    ]
    env = service_processes.service_env(
        RUNWRIGHT_FLEET="1",
        RUNWRIGHT_FLEET_QUEUE=host_queue,
        RUNWRIGHT_SCHEDULER_QUEUE=scheduler_queue,
        RUNWRIGHT_FLEET_HEARTBEAT_SECONDS="1",
        RUNWRIGHT_FLEET_HOST_LOST_SECONDS="4",
        RUNWRIGHT_HEARTBEAT_SECONDS="1",
        RUNWRIGHT_GPUS=gpus,
        RUNWRIGHT_GPU_MODEL=model,
        RUNWRIGHT_GPU_LOCK_DIR=str(tmp_path / f"locks-{node}"),
        RUNWRIGHT_CACHE_DIR=str(cache),
    )
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=service_processes.ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        service_processes.wait_for_text(log_path, "joined the fleet", proc, f"worker {node}")
        yield hostname, proc
    finally:
        service_processes.stop_group(proc)
        print(log_path.read_text(errors="replace")[-3000:])


@pytest.fixture
def member():
    team = Team.objects.create(name=f"fleet-{uuid.uuid4().hex[:6]}")
    user = get_user_model().objects.create_user(f"erin-{uuid.uuid4().hex[:6]}", password="x" * 12)
    add_member(team, user, Role.MEMBER)
    return user, Project.objects.create(team=team, name="fleet")


def launch(member, name: str, *, steps: int = 12, max_restarts: int = 0, **resources) -> Run:
    user, project = member
    train = {
        "max_steps": steps,
        "log_every": 2,
        "eval_every": 0,
        "checkpoint_every": 4,
        "max_restarts": max_restarts,
    }
    overrides = {
        "parallel": {"num_processes": 1, "device": "auto"},
        "optim": {"warmup_steps": 2},
        "train": train,
        "resources": resources,
    }
    return create_run(user=user, project=project, name=name, preset="tiny-cpu", overrides=overrides)


def wait_until(what: str, predicate, timeout: float = TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def final(run: Run, attempt: int = 1) -> Run:
    def done():
        run.refresh_from_db()
        return run.attempt >= attempt and run.status in FINAL_STATUSES

    try:
        wait_until(f"run {run.name} to end", done)
    except AssertionError:
        log = run.run_dir / "launcher.log"
        raise AssertionError(
            f"run {run.name} still {run.status}: " + (log.read_text()[-3000:] if log.exists() else "no log")
        ) from None
    return run


def lock_holders(tmp_path: Path, hostname: str) -> dict[str, str]:
    node = hostname.split("@")[0]
    folder = tmp_path / f"locks-{node}"
    return {p.name: p.read_text() for p in folder.glob("gpu-*.lock") if p.read_text()}


def test_runs_are_placed_by_model_then_priority_and_never_share_a_gpu(
    scheduler_queue, member, tmp_path, corpus_cache
):
    with (
        fleet_worker(tmp_path, "h100", "0,1", "NVIDIA H100", scheduler_queue, corpus_cache) as (big, _),
        fleet_worker(tmp_path, "a100", "0", "NVIDIA A100", scheduler_queue, corpus_cache) as (small, _),
    ):
        assert set(Host.objects.values_list("name", flat=True)) >= {big, small}
        h1 = launch(member, "h100-1", steps=16, gpu_model="H100")
        h2 = launch(member, "h100-2", steps=16, gpu_model="H100")
        a1 = launch(member, "a100-1", steps=8, gpu_model="A100")
        wait_until(
            "the first A100 run to be placed",
            lambda: Placement.objects.filter(pk=a1.pk, host__isnull=False).exists(),
        )
        low = launch(member, "a100-low", steps=6, gpu_model="A100", priority=0)
        high = launch(member, "a100-high", steps=6, gpu_model="A100", priority=90)

        # Both H100 runs train at once on the two-GPU host, each on a GPU of its own.
        def both_running():
            return Run.objects.filter(pk__in=[h1.pk, h2.pk], status=RunStatus.RUNNING).count() == 2

        wait_until("both H100 runs to run", both_running)
        holders = lock_holders(tmp_path, big)
        assert sorted(holders) == ["gpu-0.lock", "gpu-1.lock"]
        assert {t.split("-")[1] for t in holders.values()} == {str(h1.pk), str(h2.pk)}, holders
        # The A100 host holds one run; the others wait with the reason on their placement.
        waiting = Placement.objects.get(pk=low.pk)
        assert waiting.host is None and "needs 1 × A100" in waiting.reason

        for run in (h1, h2, a1, low, high):
            assert final(run).status == RunStatus.COMPLETED, run.error

    def attempt(run: Run) -> RunAttempt:
        return RunAttempt.objects.get(run=run, number=1)

    assert {attempt(h1).worker, attempt(h2).worker} == {big}
    assert {attempt(r).worker for r in (a1, low, high)} == {small}
    # One GPU on the A100 host: its runs ran one after the other, the higher priority first.
    order = sorted((a1, low, high), key=lambda r: attempt(r).started_at)
    assert [r.name for r in order] == ["a100-1", "a100-high", "a100-low"]
    for before, after in zip(order, order[1:], strict=False):
        assert attempt(before).ended_at <= attempt(after).started_at
    assert Host.objects.get(name=small).reserved == 0 and Host.objects.get(name=big).reserved == 0


def test_a_run_on_a_killed_worker_is_recovered_on_another(
    scheduler_queue, member, tmp_path, corpus_cache, settings
):
    with fleet_worker(tmp_path, "doomed", "0", "NVIDIA H100", scheduler_queue, corpus_cache) as (
        doomed,
        proc,
    ):
        run = launch(member, "survivor", steps=24, max_restarts=1)

        def checkpointed():
            run.refresh_from_db()
            return run.status == RunStatus.RUNNING and run.checkpoints.filter(step__gte=4).exists()

        wait_until("a checkpoint on the doomed host", checkpointed)
        os.killpg(proc.pid, signal.SIGKILL)  # the host is gone: no goodbye
        proc.wait(timeout=20)
    # The spare host joins only now: the run must not finish on the doomed one meanwhile.
    with fleet_worker(tmp_path, "spare", "0", "NVIDIA H100", scheduler_queue, corpus_cache) as (spare, _):
        settings.LOST_AFTER_SECONDS = 3
        wait_until("the sweep to mark the run lost", lambda: run.pk in sweep.sweep_lost_runs(), timeout=60)

        def resumed():  # beat's sweep, run here: it resumes the run one LOST_AFTER later
            sweep.sweep_lost_runs()
            return Run.objects.filter(pk=run.pk, attempt=2).exists()

        wait_until("the sweep to resume the lost run", resumed, timeout=30)
        run = final(run, attempt=2)
    assert run.status == RunStatus.COMPLETED and run.attempt == 2, run.error
    first, second = RunAttempt.objects.filter(run=run).order_by("number")
    assert (first.worker, first.status) == (doomed, RunStatus.LOST)
    assert (second.worker, second.kind, second.status) == (spare, AttemptKind.RECOVERY, RunStatus.COMPLETED)
    assert Placement.objects.get(pk=run.pk).host.name == spare
    assert Host.objects.get(name=doomed).reserved == 0
