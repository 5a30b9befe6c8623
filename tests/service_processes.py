"""Real service processes for tests: a Celery worker (and the settings it needs).

Tests that claim to test the worker run ``celery -A workers worker`` as a
subprocess on the same test database and broker folders as the test process
(SQLite file + filesystem broker by default, PostgreSQL + Redis when
RUNWRIGHT_DATABASE_URL / RUNWRIGHT_REDIS_URL are set). Importable from every
test module because pytest puts this folder on sys.path for tests/conftest.py.
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
from urllib.parse import quote

from django.conf import settings
from django.db import connection

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def database_url() -> str:
    """RUNWRIGHT_DATABASE_URL for the test database this process uses."""
    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    return f"postgresql://{auth}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


def service_env(**extra: str) -> dict[str, str]:
    """The environment a web server or worker subprocess needs to share this test's state."""
    return {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "RUNWRIGHT_DATABASE_URL": database_url(),
        "RUNWRIGHT_DATA_DIR": str(settings.DATA_DIR),  # broker folders and run dirs of this process
        "PYTHONPATH": str(ROOT),
        **extra,
    }


def wait_for_text(log_path: Path, text: str, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while text not in log_path.read_text(errors="replace"):
        assert proc.poll() is None, f"{what} exited:\n" + log_path.read_text(errors="replace")
        assert time.monotonic() < deadline, f"{what} not ready:\n" + log_path.read_text(errors="replace")
        time.sleep(0.3)


def stop_group(proc: subprocess.Popen, grace: float = 20) -> None:
    """SIGTERM the process group, then SIGKILL what is still there after ``grace`` seconds."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def training_worker(log_path: Path, cache_dir: Path):
    """A worker on a queue of its own (other suites may share the broker), fast heartbeats, and
    the tokenized corpus cached in ``cache_dir`` (tokenizing costs seconds a run)."""
    return celery_worker(
        log_path, own_queue=True, RUNWRIGHT_HEARTBEAT_SECONDS="1", RUNWRIGHT_CACHE_DIR=str(cache_dir)
    )


@contextlib.contextmanager
def celery_worker(
    log_path: Path, *, own_queue: bool = False, **extra_env: str
) -> Iterator[tuple[str, subprocess.Popen]]:
    """A ready ``celery -A workers worker`` subprocess; yields (queue, process).

    ``own_queue`` gives it a queue of its own so that other suites sharing the
    broker can't take its tasks (send with ``.apply_async(queue=queue)``).
    """
    queue = f"test-{uuid.uuid4().hex[:10]}" if own_queue else "celery"
    argv = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", queue]
    argv += ["--concurrency", "1", "--loglevel", "info", "--hostname", f"{queue}-{uuid.uuid4().hex[:6]}@%h"]
    argv += ["--without-gossip", "--without-mingle"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=service_env(**extra_env),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_text(log_path, " ready.", proc, "celery worker")
        yield queue, proc
    finally:
        stop_group(proc)
        print(log_path.read_text(errors="replace")[-4000:])


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def web_server(log_path: Path, **extra_env: str) -> Iterator[str]:
    """A ready uvicorn (the production ASGI app) on this test's database; yields its base URL.

    Tests that use it need ``transactional_db``: the server is another process and sees
    only committed rows.
    """
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1"]
    argv += ["--port", str(port), "--log-level", "warning"]
    env = {k: v for k, v in service_env(**extra_env).items() if k != "RUNWRIGHT_BROKER_URL"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "uvicorn exited:\n" + log_path.read_text(errors="replace")
            try:
                import urllib.request

                urllib.request.urlopen(base + "/login/", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn not ready:\n" + log_path.read_text(
                    errors="replace"
                )
                time.sleep(0.2)
        yield base
    finally:
        stop_group(proc)
        print(log_path.read_text(errors="replace")[-4000:])
