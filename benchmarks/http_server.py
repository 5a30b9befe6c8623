"""The web server a benchmark measures: uvicorn serving ``webapp.asgi`` in its own process.

One way for every benchmark that talks HTTP (``run_page``, ``runs_table``, ``live_latency``),
so their figures come from the same server, started, waited for and stopped the same way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def server_env(data_dir: Path | str, database_url: str = "", **extra: str) -> dict[str, str]:
    """This process's environment without any ``RUNWRIGHT_*`` setting, plus the given data dir and database.

    The caller's own settings are dropped so a benchmark measures the default it names
    (embedded SQLite unless ``database_url``), not whatever the shell had set.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNWRIGHT_")}
    env |= {
        "DJANGO_SETTINGS_MODULE": "webapp.settings",
        "PYTHONPATH": str(ROOT),
        "RUNWRIGHT_DATA_DIR": str(data_dir),
    }
    if database_url:
        env["RUNWRIGHT_DATABASE_URL"] = database_url
    return env | extra


@dataclass(frozen=True)
class WebServer:
    port: int
    pid: int

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@contextlib.contextmanager
def web_server(
    env: dict[str, str], log: Path | None = None, start_timeout: float = 60.0
) -> Iterator[WebServer]:
    """uvicorn on a free local port, listening when this yields; stopped (SIGTERM, then SIGKILL) after.

    ``log``: where its output goes (default: discarded).
    """
    port = _free_port()
    out = log.open("w") if log else subprocess.DEVNULL
    command = [
        sys.executable,
        "-m",
        "uvicorn",
        "webapp.asgi:application",
        "--port",
        str(port),
        "--no-access-log",
    ]
    proc = subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(port, proc, start_timeout)
        yield WebServer(port, proc.pid)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if log:
            out.close()


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time a process has used so far (the server's own cost of a request)."""
    import psutil

    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the web server exited with {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.1)
    raise RuntimeError("the web server did not start listening")
