"""Helpers shared by the browser tests (fixtures are in conftest.py)."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
from pathlib import Path

from service_processes import ROOT

PASSWORD = "alice-password-1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Processes:
    def __init__(self, logs: Path):
        self.logs = logs
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> Path:
        log_path = self.logs / f"{name}.log"
        with open(log_path, "wb") as log:
            self.procs[name] = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        return log_path

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited:\n" + self.tail(name)

    def tail(self, name: str) -> str:
        return (self.logs / f"{name}.log").read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def workers_available() -> bool:
    return importlib.util.find_spec("workers") is not None


def log_in(page, base: str, username: str = "alice", password: str = PASSWORD) -> None:
    page.goto(base + "/login/")
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/projects/")


def stored_run(project, name: str, status: str, step: int, overrides: dict | None = None):
    """A run row as a finished (or running) trainer leaves it: the run page reads only the database."""
    from modelcore.config import resolve
    from webapp.runs.models import Run

    return Run.objects.create(
        project=project,
        name=name,
        preset="tiny-cpu",
        config=resolve("tiny-cpu", overrides or {}).to_dict(),
        status=status,
        step=step,
    )
