"""The fault-injection harness: a TCP proxy that can go down, and the checks every fault test ends with.

The machine's PostgreSQL and Redis are shared by everyone on it, so a test never
stops or reconfigures them: the stack under test reaches them through a
``TcpProxy`` that the test takes down (listener closed, so new connections are
refused; live connections dropped) and brings back on the same port.

What "nothing lost" means here: the run's events file is the record (DESIGN),
so every metric value the trainer logged (read with ``modelcore.events``'s
reader) must be in the database exactly once, per (key, step), with its value.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psutil
import service_processes
from django.conf import settings
from django.db import connection

from modelcore.events import EVENTS_FILE, read_events
from webapp.metrics.models import MetricPoint
from webapp.runs.models import Run
from workers.tasks import launch_run

# tiny-cpu made tinier: one process, a small corpus, every step logged. About
# 15 s of startup and 0.25 s a step on this 2-core machine.
TINY = {
    "parallel": {"num_processes": 1},
    "data": {"max_corpus_mb": 0.3},
    "train": {"max_steps": 40, "log_every": 1, "eval_every": 20, "checkpoint_every": 0},
}
HEARTBEAT_SECONDS = "1"
# Small enough that a proxy notices a closed listener quickly, large enough not to spin.
ACCEPT_POLL_SECONDS = 0.2


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``target``; ``down()`` refuses and drops, ``up()`` accepts again."""

    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.port = 0
        self.accepted = 0  # connections forwarded so far: proof the stack really goes through us
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._connections: set[socket.socket] = set()

    def start(self) -> TcpProxy:
        self._listen()
        return self

    def url(self, url: str) -> str:
        """``url`` (postgresql://, redis://) with its host and port replaced by this proxy's."""
        parts = urlsplit(url)
        auth = parts.netloc.rpartition("@")[0]
        netloc = f"{auth}@127.0.0.1:{self.port}" if auth else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def down(self) -> None:
        """Close the listener (a connect is refused) and every connection through the proxy."""
        with self._lock:
            listener, self._listener = self._listener, None
            connections, self._connections = self._connections, set()
        if listener is not None:
            # shutdown() first: close() alone leaves the socket listening until the
            # accept thread's pending poll returns, and a connect in that window succeeds.
            _close(listener)
        for sock in connections:
            _close(sock)

    def up(self) -> None:
        """Listen again on the same port."""
        self._listen()

    @contextlib.contextmanager
    def outage(self, seconds: float) -> Iterator[None]:
        """Down for ``seconds`` (the fault itself lasts that long), then up again, whatever happens."""
        self.down()
        try:
            time.sleep(seconds)
            yield
        finally:
            self.up()

    def close(self) -> None:
        self.down()

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # The port's closed connections linger in TIME_WAIT; coming back on it must still work.
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(ACCEPT_POLL_SECONDS)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed by down()
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            client.settimeout(None)
            upstream.settimeout(None)
            with self._lock:
                if self._listener is not listener:  # went down while we connected
                    _close(client)
                    _close(upstream)
                    return
                self._connections.update((client, upstream))
                self.accepted += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._connections.discard(src)
                self._connections.discard(dst)
            _close(src)
            _close(dst)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv() on it
    with contextlib.suppress(OSError):
        sock.close()


@dataclass
class Stack:
    """The worker under test and the proxies in front of its services (None where not in use)."""

    queue: str
    worker_log: Path
    db_proxy: TcpProxy | None
    redis_proxy: TcpProxy | None

    def launch(self, run: Run) -> str:
        """Enqueue the run on this worker's queue; returns the task id."""
        return launch_run.apply_async((run.id,), queue=self.queue).id

    def log(self) -> str:
        return self.worker_log.read_text(errors="replace")

    def task_ended(self, task_id: str) -> bool:
        """Whether the worker finished the task (returned or raised), from its log."""
        text = self.log()
        return f"[{task_id}] succeeded" in text or f"[{task_id}] raised" in text


def postgres_in_use() -> bool:
    return connection.vendor == "postgresql"


def worker_env(
    corpus_cache: Path, db_proxy: TcpProxy | None, redis_proxy: TcpProxy | None, **extra: str
) -> dict[str, str]:
    """The worker's environment: fast heartbeats, the shared corpus cache, services through the proxies."""
    env = {"RUNWRIGHT_HEARTBEAT_SECONDS": HEARTBEAT_SECONDS, "RUNWRIGHT_CACHE_DIR": str(corpus_cache)}
    if db_proxy is not None:
        env["RUNWRIGHT_DATABASE_URL"] = db_proxy.url(service_processes.database_url())
    if redis_proxy is not None:
        # Both the broker and the live channel: a Redis restart hits the worker's every connection.
        env["RUNWRIGHT_REDIS_URL"] = redis_proxy.url(settings.REDIS_URL)
        if settings.CELERY_BROKER_URL == settings.REDIS_URL:
            env["RUNWRIGHT_BROKER_URL"] = env["RUNWRIGHT_REDIS_URL"]
    return {**env, **extra}


# --- waiting ------------------------------------------------------------------


def wait_until(
    condition: Callable[[], Any],
    timeout: float,
    describe: Callable[[], str],
    progress: Callable[[], Any] | None = None,
) -> Any:
    """Poll ``condition`` until it is truthy (returned); fail with ``describe()`` after ``timeout`` s.

    With ``progress``, the ``timeout`` counts from the last change of its value: on a
    loaded machine a run may be slow, but one that stops moving fails as fast as ever.
    """
    deadline = time.monotonic() + timeout
    seen = progress() if progress is not None else None
    while True:
        result = condition()
        if result:
            return result
        if progress is not None and (now := progress()) != seen:
            seen, deadline = now, time.monotonic() + timeout
        if time.monotonic() >= deadline:
            still = " without progress" if progress is not None else ""
            raise AssertionError(f"not within {timeout:.0f} s{still}: {describe()}")
        time.sleep(0.25)


# --- the trainer's processes and files ----------------------------------------


def trainer_processes(run: Run) -> list[psutil.Process]:
    """Live processes training ``run`` (found by its run directory on their command line)."""
    run_dir = {str(run.run_dir), str(Path(run.run_dir).resolve())}
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = proc.info["cmdline"] or []
        if (
            proc.pid != os.getpid()
            and run_dir.intersection(cmdline)
            and proc.info["status"] != psutil.STATUS_ZOMBIE
        ):
            found.append(proc)
    return found


def kill_trainers(run: Run) -> list[int]:
    """SIGKILL every process training ``run``; returns their pids."""
    pids = []
    for proc in trainer_processes(run):
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
            pids.append(proc.pid)
    return pids


def events_path(run: Run) -> Path:
    return Path(run.run_dir) / EVENTS_FILE


def progress(run: Run) -> tuple[int, str, int]:
    """What moves while a run is alive: its events file, its status, its ingested offset."""
    path = events_path(run)
    run.refresh_from_db(fields=["status", "events_offset"])
    return (path.stat().st_size if path.exists() else 0, run.status, run.events_offset)


def trainer_step(run: Run) -> int:
    """The last step the trainer logged, read from its events file (ahead of the database)."""
    step = 0
    for event in logged_events(events_path(run)):
        if event.get("type") == "metric" and _is_step(event.get("step")):
            step = max(step, event["step"])
    return step


def trainer_final_status(run: Run) -> str | None:
    """The final status the trainer wrote, if it has."""
    statuses = [e.get("status") for e in logged_events(events_path(run)) if e.get("type") == "status"]
    final = [s for s in statuses if s in ("completed", "failed", "cancelled")]
    return final[-1] if final else None


def append_lines(path: Path, lines: list[bytes]) -> None:
    """Append whole lines the way the trainer does (O_APPEND, one write each), between its own lines."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    try:
        for line in lines:
            os.write(fd, line.rstrip(b"\n") + b"\n")
    finally:
        os.close(fd)


def launcher_log(run: Run) -> str:
    path = Path(run.run_dir) / "launcher.log"
    return path.read_text(errors="replace")[-4000:] if path.exists() else "(no launcher.log)"


# --- nothing lost, nothing doubled --------------------------------------------


def logged_points(path: Path, end: int | None = None) -> dict[tuple[str, int], float | None]:
    """Every metric value the trainer logged up to byte ``end``: (key, step) -> value (the last one wins).

    Lines that are not a well-formed metric event (an injected fault) are not the
    trainer's points and are left out: the database must not hold them either.
    """
    points: dict[tuple[str, int], float | None] = {}
    for event in logged_events(path, end):
        if event.get("type") not in ("metric", "eval") or not _is_step(event.get("step")):
            continue
        values = event.get("values")
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            if value is None or (isinstance(value, int | float) and not isinstance(value, bool)):
                number = None if value is None or not math.isfinite(value) else float(value)
                points[(key, event["step"])] = number
    return points


def point_differences(run: Run, end: int | None = None) -> list[str]:
    """How the run's points in the database differ from its events file (empty: exactly once each)."""
    logged = logged_points(events_path(run), end)
    keys = {key for key, _ in logged}
    rows = list(MetricPoint.objects.filter(run=run).values_list("key", "step", "value"))
    counts = Counter((key, step) for key, step, _ in rows)
    stored = {(key, step): value for key, step, value in rows}
    problems = [f"{k} stored {n} times" for k, n in counts.items() if n > 1]
    missing = sorted(set(logged) - set(stored))
    if missing:
        problems.append(f"{len(missing)} of {len(logged)} logged points missing, e.g. {missing[:5]}")
    # System stats are points too but not logged per step; compare the keys the trainer logged as metrics.
    extra = sorted(k for k in stored if k[0] in keys and k not in logged)
    if extra:
        problems.append(f"{len(extra)} points in the database that the events file does not log: {extra[:5]}")
    wrong = [
        (k, logged[k], stored[k])
        for k in sorted(set(logged) & set(stored))
        if not _same(logged[k], stored[k])
    ]
    if wrong:
        problems.append(f"{len(wrong)} points with another value than logged, e.g. {wrong[:3]}")
    if not logged:
        problems.append("the events file logs no metric at all: nothing was measured")
    return problems


def _same(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)


def _is_step(step: Any) -> bool:
    return isinstance(step, int) and not isinstance(step, bool) and step >= 0


def logged_events(path: Path, end: int | None = None) -> Iterator[dict[str, Any]]:
    """The events of ``path`` up to byte ``end`` (the whole file by default), with the engine's reader."""
    offset = 0
    limit = path.stat().st_size if end is None and path.exists() else (end or 0)
    while offset < limit:
        batch = read_events(path, offset, max_bytes=limit - offset)
        if batch.offset == offset:
            return
        yield from batch.events
        offset = batch.offset
