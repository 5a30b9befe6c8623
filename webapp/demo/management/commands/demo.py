"""``python manage.py demo``: the whole product on the embedded default, one command.

Migrates the SQLite database, creates the demo login, starts uvicorn, a Celery
worker and beat (filesystem broker, no servers), queues a demo training run
and prints the URL. Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from webapp.demo.processes import ProcessGroup, free_port, wait_for_http
from webapp.demo.services import ensure_demo_user
from webapp.runs.services import create_run

# Long enough that the curve is still growing when the browser opens: tiny-cpu trains about
# 55 steps/s on two cores, so this streams for about 6 minutes (2000 logged points).
DEMO_RUN_OVERRIDES = {"train": {"max_steps": 20_000, "log_every": 10, "eval_every": 500}}


class Command(BaseCommand):
    help = "Start web, worker, beat and a demo run on the embedded default (Ctrl-C stops)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-run", action="store_true", help="Do not queue the demo training run.")

    def handle(self, *args, host: str, port: int, no_run: bool, **options):
        call_command("migrate", interactive=False, verbosity=0)
        user, password, project = ensure_demo_user()
        port = free_port(port, host)
        python, env = sys.executable, os.environ.copy()
        group = ProcessGroup(log_dir=settings.DATA_DIR / "logs")
        stop = _install_stop_handlers()
        try:
            group.start(
                "web",
                [
                    python,
                    "-m",
                    "uvicorn",
                    "webapp.asgi:application",
                    "--host",
                    host,
                    "--port",
                    str(port),
                    "--log-level",
                    "warning",
                ],
                env,
            )
            # Two slots: one supervises the demo run, the other serves eval jobs meanwhile.
            group.start(
                "worker",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "workers",
                    "worker",
                    "--loglevel",
                    "warning",
                    "--concurrency",
                    "2",
                ],
                env,
            )
            group.start(
                "beat",
                [
                    python,
                    "-m",
                    "celery",
                    "-A",
                    "workers",
                    "beat",
                    "--loglevel",
                    "warning",
                    "--schedule",
                    str(settings.DATA_DIR / "celerybeat-schedule"),
                ],
                env,
            )
            if not wait_for_http(host, port):
                raise SystemExit(f"the web server did not start; see {group.log_dir / 'web.log'}")
            url = f"http://{host}:{port}/"
            if not no_run:
                run = queue_demo_run(user, project)
                url_run = f"{url}runs/{run.id}/"
                self.stdout.write(f"Demo run queued: {url_run}")
            self.stdout.write(self.style.SUCCESS(f"\nRunwright is up: {url}"))
            self.stdout.write(f"Log in as {user.username} / {password}")
            self.stdout.write(f"Data directory: {settings.DATA_DIR}; logs in {group.log_dir}")
            self.stdout.write("Ctrl-C stops everything.\n")
            while not stop.is_set():
                dead = group.first_exited()
                if dead:
                    self.stderr.write(f"the {dead} process exited (see {group.log_dir}/{dead}.log); stopping")
                    break
                time.sleep(0.5)
        finally:
            self.stdout.write("Stopping web, worker and beat ...")
            group.stop()
            self.stdout.write("Stopped.")


def queue_demo_run(user, project):
    return create_run(
        user=user, project=project, name="demo: tiny-cpu", preset="tiny-cpu", overrides=DEMO_RUN_OVERRIDES
    )


class _StopFlag:
    def __init__(self) -> None:
        self._set = False

    def set(self, *_: object) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set


def _install_stop_handlers() -> _StopFlag:
    flag = _StopFlag()
    signal.signal(signal.SIGINT, flag.set)
    signal.signal(signal.SIGTERM, flag.set)
    return flag
