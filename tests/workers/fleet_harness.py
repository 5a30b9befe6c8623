"""Several hosts simulated as several real Celery workers on this machine, with the fleet on.

Each worker (``fleet_worker``) has its own queue, lock folder and a declared fake GPU
inventory (``RUNWRIGHT_GPUS`` + ``RUNWRIGHT_GPU_MODEL``); it registers and beats like a GPU
host and registers 127.0.0.1 as its address (the rendezvous of multi-node runs). Runs are
launched the web's way (``create_run``), whose send goes to the scheduler task on the test's
queue. Fixtures and helpers shared by the fleet's real-worker tests.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import service_processes
from django.conf import settings
from django.contrib.auth import get_user_model

from webapp.accounts.models import Role, Team
from webapp.accounts.services import add_member
from webapp.projects.models import Project
from webapp.runs.models import FINAL_STATUSES, Run
from webapp.runs.services import create_run

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


@dataclass
class Worker:
    """One started worker playing a host: the name it registers under, its process and log."""

    name: str
    proc: subprocess.Popen
    log_path: Path


def start_worker(
    tmp_path: Path, name: str, gpus: str, model: str, scheduler_queue: str, cache: Path, **extra_env: str
) -> Worker:
    """Start a worker playing one GPU host (without waiting for it to join the fleet)."""
    node = f"{name}-{uuid.uuid4().hex[:6]}"
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
        f"{node}@fleet",
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
        RUNWRIGHT_FLEET_ADDRESS="127.0.0.1",
        **extra_env,
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
    return Worker(f"{node}@fleet", proc, log_path)


@contextlib.contextmanager
def fleet_workers(
    tmp_path: Path,
    names: list[str],
    gpus: str,
    model: str,
    scheduler_queue: str,
    cache: Path,
    **extra_env: str,
) -> Iterator[list[Worker]]:
    """Workers playing one GPU host each, started at once; yields them once all joined the fleet."""
    workers: list[Worker] = []
    try:
        for name in names:
            workers.append(start_worker(tmp_path, name, gpus, model, scheduler_queue, cache, **extra_env))
        for w in workers:
            service_processes.wait_for_text(w.log_path, "joined the fleet", w.proc, f"worker {w.name}")
        yield workers
    finally:
        for w in workers:
            service_processes.stop_group(w.proc)
        for w in workers:
            print(w.log_path.read_text(errors="replace")[-3000:])


@contextlib.contextmanager
def fleet_worker(
    tmp_path: Path, name: str, gpus: str, model: str, scheduler_queue: str, cache: Path, **extra_env: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A worker playing one GPU host; yields (its registered name, its process)."""
    with fleet_workers(tmp_path, [name], gpus, model, scheduler_queue, cache, **extra_env) as (worker,):
        yield worker.name, worker.proc


@pytest.fixture
def member():
    team = Team.objects.create(name=f"fleet-{uuid.uuid4().hex[:6]}")
    user = get_user_model().objects.create_user(f"erin-{uuid.uuid4().hex[:6]}", password="x" * 12)
    add_member(team, user, Role.MEMBER)
    return user, Project.objects.create(team=team, name="fleet")


def launch(
    member, name: str, *, steps: int = 12, max_restarts: int = 0, overrides: dict | None = None, **resources
) -> Run:
    user, project = member
    train = {
        "max_steps": steps,
        "log_every": 2,
        "eval_every": 0,
        "checkpoint_every": 4,
        "max_restarts": max_restarts,
    }
    config = {
        "parallel": {"num_processes": 1, "device": "auto"},
        "optim": {"warmup_steps": 2},
        "train": train,
        "resources": resources,
    }
    for section, values in (overrides or {}).items():
        config.setdefault(section, {}).update(values)
    return create_run(user=user, project=project, name=name, preset="tiny-cpu", overrides=config)


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
