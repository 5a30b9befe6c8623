"""The stack the fault tests break: a real Celery worker training real (tiny) runs.

The worker is ``celery -A workers worker`` as a subprocess on the test database
and broker (SQLite + filesystem broker by default; PostgreSQL + Redis when
RUNWRIGHT_DATABASE_URL / RUNWRIGHT_REDIS_URL are set). In the service pass it
reaches PostgreSQL and Redis through ``fault_harness.TcpProxy``s that the tests
take down; this test process talks to both directly, as the web would.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import service_processes
from django.conf import settings
from django.db import connection
from fault_harness import TINY, Stack, TcpProxy, kill_trainers, postgres_in_use, worker_env

from modelcore.config import RunConfig, preset
from webapp.accounts.models import Team
from webapp.projects.models import Project
from webapp.runs.models import Run


@pytest.fixture(scope="session")
def corpus_cache(tmp_path_factory) -> Path:
    """The tokenized corpus, shared by every run of the session (tokenizing costs seconds)."""
    return tmp_path_factory.mktemp("fault-corpus-cache")


@pytest.fixture(scope="module")
def db_proxy(django_db_setup) -> Iterator[TcpProxy | None]:
    if not postgres_in_use():
        yield None
        return
    db = connection.settings_dict
    proxy = TcpProxy(db["HOST"] or "127.0.0.1", int(db["PORT"] or 5432)).start()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def redis_proxy() -> Iterator[TcpProxy | None]:
    if not settings.REDIS_URL:
        yield None
        return
    parts = urlsplit(settings.REDIS_URL)
    proxy = TcpProxy(parts.hostname or "127.0.0.1", parts.port or 6379).start()
    yield proxy
    proxy.close()


@pytest.fixture(scope="module")
def stack(django_db_setup, tmp_path_factory, corpus_cache, db_proxy, redis_proxy) -> Iterator[Stack]:
    """One worker for the module's tests, on a queue of its own, behind the proxies."""
    log_path = tmp_path_factory.mktemp("fault-worker") / "worker.log"
    env = worker_env(corpus_cache, db_proxy, redis_proxy)
    with service_processes.celery_worker(log_path, own_queue=True, **env) as (queue, _):
        yield Stack(queue, log_path, db_proxy, redis_proxy)


@pytest.fixture
def make_run() -> Iterator[Callable[..., Run]]:
    """``make_run(name, train={...})``: a queued tiny run; its trainers are killed after the test, whatever happened."""
    project = Project.objects.create(
        team=Team.objects.create(name=f"faults-{uuid.uuid4().hex[:6]}"), name="faults"
    )
    made: list[Run] = []

    def make(name: str, **train: int) -> Run:
        overrides = {**TINY, "train": {**TINY["train"], **train}}
        config = RunConfig.from_dict(overrides, base=preset("tiny-cpu")).to_dict()  # validates
        run = Run.objects.create(project=project, name=name, preset="tiny-cpu", config=config)
        made.append(run)
        return run

    yield make
    for run in made:
        kill_trainers(run)  # an orphan left by a failing test must not train on for hours
