"""Browser tests: uvicorn (and a Celery worker when asked) on the test database, driven by Chromium.

The servers are subprocesses, as in production (ASGI). They get a data
directory of their own, so their filesystem broker cannot be shared with another
suite's worker. Debian's Chromium is used because browsers cannot be downloaded here.
"""

from __future__ import annotations

import os
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from browser_support import PASSWORD, Processes, free_port
from django.contrib.auth import get_user_model
from service_processes import CHROMIUM, CHROMIUM_ARGS, database_url

from webapp.accounts.models import Membership, Role, Team
from webapp.projects.models import Project


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)
            if not CHROMIUM.exists():
                item.add_marker(pytest.mark.skip(reason="needs Debian's chromium at /usr/bin/chromium"))


@pytest.fixture
def alice_project(transactional_db) -> Project:
    team = Team.objects.create(name="browser-team")
    alice = get_user_model().objects.create_user(username="alice", password=PASSWORD)
    Membership.objects.create(team=team, user=alice, role=Role.ADMIN)
    return Project.objects.create(team=team, name="browser project", created_by=alice)


@pytest.fixture
def start_servers(transactional_db, tmp_path) -> Iterator[Callable[..., str]]:
    """``start_servers(worker=False)``: start uvicorn (and a Celery worker) and return the base URL."""
    procs = Processes(tmp_path)

    def start(worker: bool = False) -> str:
        env = {
            k: v for k, v in os.environ.items() if k not in ("RUNWRIGHT_REDIS_URL", "RUNWRIGHT_BROKER_URL")
        }
        env.update(
            RUNWRIGHT_DATABASE_URL=database_url(),
            RUNWRIGHT_DATA_DIR=str(tmp_path / "data"),
            RUNWRIGHT_HEARTBEAT_SECONDS="1",
            DJANGO_SETTINGS_MODULE="webapp.settings",
            OMP_NUM_THREADS="1",
        )
        port = free_port()
        argv = [sys.executable, "-m", "uvicorn", "webapp.asgi:application", "--host", "127.0.0.1"]
        procs.start("web", [*argv, "--port", str(port), "--log-level", "warning"], env)
        if worker:
            worker_log = procs.start(
                "worker",
                [
                    sys.executable,
                    "-m",
                    "celery",
                    "-A",
                    "workers",
                    "worker",
                    "--concurrency",
                    "1",
                    "--loglevel",
                    "info",
                    "--without-gossip",
                    "--without-mingle",
                ],
                env,
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            procs.check_alive()
            try:
                urllib.request.urlopen(base + "/login/", timeout=2)
                break
            except OSError:
                assert time.monotonic() < deadline, "uvicorn did not answer:\n" + procs.tail("web")
                time.sleep(0.3)
        while worker and " ready." not in worker_log.read_text(errors="replace"):
            procs.check_alive()
            assert time.monotonic() < deadline + 60, "worker not ready:\n" + procs.tail("worker")
            time.sleep(0.3)
        return base

    try:
        yield start
    finally:
        procs.stop()
        for name in procs.procs:
            print(f"--- {name} log ---\n{procs.tail(name)}")


@pytest.fixture
def chromium() -> Iterator[tuple[object, list[str]]]:
    """(page, JavaScript errors seen on it) in a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1360, "height": 900})
        page.set_default_timeout(30_000)
        js_errors: list[str] = []
        page.on("pageerror", lambda exc: js_errors.append(str(exc)))
        try:
            yield page, js_errors
        finally:
            browser.close()
