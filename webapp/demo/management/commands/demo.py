"""``python manage.py demo``: the whole product on the embedded default, one command.

Migrates the SQLite database, creates the demo login, starts uvicorn, a Celery
worker and beat (filesystem broker, no servers), queues a long live training run
and a short one, and prints the URL. Once the short run has completed, its final
checkpoint and the live run's latest are evaluated on the built-in tasks with a
report comparing them (webapp.demo.services). Ctrl-C stops everything.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand
from django.urls import reverse

from webapp.demo.processes import ProcessGroup, free_port, wait_for_http
from webapp.demo.services import advance_demo, ensure_demo_user, queue_demo_runs
from webapp.input_errors import InputError

ADVANCE_EVERY_S = 2.0  # how often the loop looks whether the short run is done


class Command(BaseCommand):
    help = "Start web, worker, beat and a demo run on the embedded default (Ctrl-C stops)."

    def add_arguments(self, parser):
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument(
            "--no-run", action="store_true", help="Do not queue the demo training runs and evaluations."
        )

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
            # Two slots: one supervises the live run; the other the short run, then the eval jobs.
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
                live, short = queue_demo_runs(user, project)
                self.stdout.write(f"Demo run queued: {url}runs/{live.id}/")
                self.stdout.write(
                    f"Short run queued (done within a minute, then evaluated): {url}runs/{short.id}/"
                )
            self.stdout.write(self.style.SUCCESS(f"\nRunwright is up: {url}"))
            self.stdout.write(f"Log in as {user.username} / {password}")
            self.stdout.write(f"Data directory: {settings.DATA_DIR}; logs in {group.log_dir}")
            self.stdout.write("Ctrl-C stops everything.\n")
            scenario, next_advance = not no_run, 0.0
            while not stop.is_set():
                if scenario and time.monotonic() >= next_advance:
                    next_advance = time.monotonic() + ADVANCE_EVERY_S
                    scenario = self._advance(user, project, url)
                dead = group.first_exited()
                if dead:
                    self.stderr.write(f"the {dead} process exited (see {group.log_dir}/{dead}.log); stopping")
                    break
                time.sleep(0.5)
        finally:
            self.stdout.write("Stopping web, worker and beat ...")
            group.stop()
            self.stdout.write("Stopped.")

    def _advance(self, user, project, url: str) -> bool:
        """One look at the demo's runs; answers whether to look again."""
        try:
            report = advance_demo(user, project)
        except InputError as exc:  # e.g. the built-in tasks are missing: the runs go on regardless
            self.stderr.write(f"the demo's evaluation could not be queued: {exc.errors}")
            return False
        if report is None:
            return True
        self.stdout.write(
            f"Evaluations queued; their report: {url.rstrip('/')}{reverse('evals:report', args=[report.id])}"
        )
        return False


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
