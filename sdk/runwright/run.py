"""A run being logged: ``log`` hands points to a background thread and returns at once.

``log`` appends a tuple to a bounded deque (an append under the GIL, no lock and no
wake-up: well under a microsecond, measured by ``benchmarks.sdk_overhead``). The sender
thread wakes every ``flush_seconds``, writes what it finds to ``events.jsonl`` (the run's
record on this machine) and uploads the file from where the server last acknowledged it.
While the server is unreachable it backs off (doubling up to ``max_backoff_seconds``)
and the file keeps everything; when the server is back the upload resumes from its
offset, so no point is lost and, the server's upserts being keyed by (key, step) and seq,
none is doubled. A full queue drops the newest point and counts it: training never waits.
"""

from __future__ import annotations

import collections
import os
import random
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from runwright.client import Client, Refused, Unreachable
from runwright.spool import EVENTS_FILE, RUN_FILE, EventFile, clean_values, read_json, read_lines, write_json
from runwright.upload import Uploader

QUEUE_SIZE = 100_000
FLUSH_SECONDS = 0.2
HEARTBEAT_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 10.0
FINISH_TIMEOUT_SECONDS = 30.0
MODES = ("online", "offline")


class Run:
    """Use ``runwright.init(...)``; see the package docstring."""

    def __init__(
        self,
        *,
        run_dir: Path,
        client: Client | None,
        queue_size: int = QUEUE_SIZE,
        flush_seconds: float = FLUSH_SECONDS,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
        max_backoff_seconds: float = MAX_BACKOFF_SECONDS,
    ):
        self.dir = Path(run_dir)
        self.dropped = 0  # points and lines left out because the queue was full
        self.unsent = 0  # after finish: events still only in the local file
        self._queue: collections.deque[tuple[Any, ...]] = collections.deque()
        self._max = queue_size
        self._next_step = 0
        self._flush_seconds = flush_seconds
        self._heartbeat_seconds = heartbeat_seconds
        self._max_backoff = max_backoff_seconds
        self._file = EventFile(self.dir)
        self._uploader = Uploader(self.dir, client) if client is not None else None
        self._closing = threading.Event()
        self._finished = False
        self._deadline = 0.0
        self._stopped = ""  # why uploading stopped for good (a refused token or run), if it did
        self._config_pending: dict[str, Any] = {}  # params added since the run was created, not yet sent
        self._warned: set[str] = set()
        if self._uploader is not None:
            try:  # the id now when the server answers (before the sender starts: one creator only)
                self._uploader.ensure_run()
            except Unreachable as exc:
                self._warn_once(
                    "unreachable", f"runwright: server unreachable ({exc}); spooling to {self.dir}"
                )
        self._thread = threading.Thread(target=self._send_loop, name="runwright-sender", daemon=True)
        self._thread.start()

    # --- the training loop's side: never blocks --------------------------------------

    def log(self, values: Mapping[str, Any], step: int | None = None) -> None:
        """Log ``{"key": number}`` at ``step`` (the last step + 1 when not given). Returns at once."""
        if step is None:
            step = self._next_step
        self._next_step = step + 1
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        self._queue.append(("metric", step, dict(values), time.time()))

    def log_text(self, message: str, level: str = "info") -> None:
        """A line in the run's log (levels: debug, info, warning, error)."""
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        self._queue.append(("log", str(message), level, time.time()))

    def log_system(self, values: Mapping[str, Any]) -> None:
        """System stats (GPU use, memory), placed at the latest step like the trainer's."""
        if len(self._queue) >= self._max:
            self.dropped += 1
            return
        self._queue.append(("system", None, dict(values), time.time()))

    def update_config(self, values: Mapping[str, Any]) -> None:
        """Add params to the run's config (``{"optim": {"lr": 0.1}}`` is stored as ``optim.lr``)."""
        self._queue.append(("config", None, dict(values), time.time()))

    @property
    def id(self) -> int | None:
        """The run's id on the server (None while it could not be created, and offline)."""
        return self._uploader.run_id if self._uploader is not None else None

    @property
    def cancel_requested(self) -> bool:
        """Someone pressed cancel on the run's page: stop when convenient and ``finish("cancelled")``."""
        return self._uploader is not None and self._uploader.cancel_requested

    def finish(
        self, status: str = "completed", error: str = "", timeout: float = FINISH_TIMEOUT_SECONDS
    ) -> None:
        """End the run: write the rest, upload what fits in ``timeout`` seconds, report drops and leftovers."""
        if self._finished:
            return
        if status not in ("completed", "failed", "cancelled"):
            raise ValueError(f"status must be completed, failed or cancelled, got {status!r}")
        self._finished = True
        if self.dropped:
            # Past the queue's bound on purpose: the count must reach the record.
            self._queue.append(
                (
                    "log",
                    f"runwright: dropped {self.dropped} points or lines (the queue was full)",
                    "warning",
                    time.time(),
                )
            )
        self._queue.append(("status", status, error, time.time()))
        self._deadline = time.monotonic() + timeout
        self._closing.set()
        self._thread.join(timeout + 5)
        self._file.close()
        if self._uploader is not None:
            self.unsent = self._count_unsent()
        if self.dropped:
            print(
                f"runwright: {self.dropped} points or lines were dropped: the queue was full", file=sys.stderr
            )
        if self.unsent:
            print(
                f"runwright: {self.unsent} events are only in {self.dir / 'events.jsonl'} (the server did not take "
                f"them in time); upload them with: runwright sync {self.dir}",
                file=sys.stderr,
            )

    def __enter__(self) -> Run:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if kind is None:
            self.finish("completed")
        elif issubclass(kind, KeyboardInterrupt):
            self.finish("cancelled", error="KeyboardInterrupt")
        else:
            self.finish("failed", error="".join(traceback.format_exception(kind, exc, tb)))

    # --- the sender thread -------------------------------------------------------------

    def _send_loop(self) -> None:
        backoff = 0.0
        retry_at = 0.0
        last_contact = time.monotonic()
        while True:
            closing = self._closing.wait(self._flush_seconds)
            self._write_queued()
            if self._uploader is None:
                if closing:
                    return
                continue
            now = time.monotonic()
            if now < retry_at and not closing:
                continue
            try:
                if self._config_pending:
                    self._uploader.push_config(self._config_pending)
                    self._config_pending = {}
                while self._uploader.pending() and not self._uploader.progress.ended:
                    self._uploader.send_batch()
                    last_contact = time.monotonic()
                    if closing and time.monotonic() > self._deadline:
                        return
                    self._write_queued()
                if (
                    time.monotonic() - last_contact > self._heartbeat_seconds
                    and not self._uploader.progress.ended
                ):
                    self._uploader.heartbeat()
                    last_contact = time.monotonic()
                backoff = 0.0
            except Unreachable as exc:
                backoff = min(self._max_backoff, max(0.2, backoff * 2))
                retry_at = time.monotonic() + backoff * random.uniform(0.8, 1.2)
                self._warn_once(
                    "unreachable", f"runwright: server unreachable ({exc}); spooling to {self.dir}"
                )
                if closing:
                    if time.monotonic() > self._deadline:
                        return
                    time.sleep(min(backoff, max(0.0, self._deadline - time.monotonic())))
                continue
            except Refused as exc:
                self._warn_once(
                    "refused", f"runwright: the server refused the run ({exc}); only the local file is kept"
                )
                self._uploader = None
                self._stopped = str(exc)
                continue
            except Exception as exc:  # never let the sender die silently while training goes on
                self._warn_once(type(exc).__name__, f"runwright: upload error {exc!r}; retrying")
                retry_at = time.monotonic() + self._max_backoff
                continue
            if closing:
                return

    def _write_queued(self) -> None:
        queue = self._queue
        wrote = False
        while queue:
            kind, a, b, stamp = queue.popleft()
            if kind == "metric":
                values, bad = clean_values(b)
                if bad:
                    self._warn_once(
                        "values", f"runwright: {bad} values at step {a} are not numbers; left out"
                    )
                self._file.append("metric", {"step": a, "values": values}, stamp)
            elif kind == "system":
                values, _ = clean_values(b)
                self._file.append("system", {"values": values}, stamp)
            elif kind == "log":
                self._file.append("log", {"level": b, "message": a}, stamp)
            elif kind == "config":
                record = read_json(self.dir / RUN_FILE)
                record["config"] = {**(record.get("config") or {}), **b}
                write_json(self.dir / RUN_FILE, record)
                self._config_pending = {**self._config_pending, **b}
            elif kind == "status":
                fields = {"status": a}
                if b:
                    fields["error"] = b
                self._file.append("status", fields, stamp)
            wrote = True
        if wrote:
            self._file.flush()

    def _count_unsent(self) -> int:
        assert self._uploader is not None
        events, _ = read_lines(self.dir / EVENTS_FILE, self._uploader.offset, 10**9, 1 << 62)
        return len(events)

    def _warn_once(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            print(message, file=sys.stderr)


def init(
    project: str | int,
    name: str = "",
    config: Mapping[str, Any] | None = None,
    tags: list[str] | None = None,
    *,
    url: str | None = None,
    token: str | None = None,
    mode: str | None = None,
    dir: str | os.PathLike[str] | None = None,
    team: int | None = None,
    **options: Any,
) -> Run:
    """Start a run (see the package docstring). ``options``: queue_size, flush_seconds, heartbeat_seconds,
    max_backoff_seconds."""
    mode = mode or os.environ.get("RUNWRIGHT_MODE") or "online"
    if mode not in MODES:
        raise ValueError(f"RUNWRIGHT_MODE must be online or offline, got {mode!r}")
    url = url or os.environ.get("RUNWRIGHT_URL") or ""
    token = token or os.environ.get("RUNWRIGHT_TOKEN") or ""
    if mode == "online" and not (url and token):
        raise ValueError(
            "set RUNWRIGHT_URL and RUNWRIGHT_TOKEN (or pass url= and token=), or RUNWRIGHT_MODE=offline"
        )
    run_dir = Path(dir) if dir is not None else _default_dir(name)
    run_dir.mkdir(parents=True, exist_ok=True)
    record = read_json(run_dir / RUN_FILE)  # a folder used before: the same run, continued
    record.update(
        {
            "url": url or record.get("url", ""),
            "project": project,
            "team": team,
            "name": name,
            "config": dict(config or {}),
            "tags": list(tags or []),
        }
    )
    write_json(run_dir / RUN_FILE, record)
    client = Client(url, token) if mode == "online" else None
    return Run(run_dir=run_dir, client=client, **options)


def _default_dir(name: str) -> Path:
    base = Path(os.environ.get("RUNWRIGHT_DIR") or "runwright")
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "-" for ch in name)[:60] or "run"
    return base / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{os.getpid()}"
