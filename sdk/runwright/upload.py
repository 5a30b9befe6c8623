"""Uploading a run folder's ``events.jsonl`` to the server, from where it last stopped.

One class for both the live run's background thread and ``runwright sync``: it creates
the run on the server when the folder has none yet (and writes its id into ``run.json``
at once, so a second sync never creates a second run), then sends the file's events in
batches from the acknowledged offset (``upload.json``). The server upserts points per
(key, step) and log lines per seq, so a batch sent twice, because its answer was lost,
changes nothing.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runwright.client import Client, Refused
from runwright.spool import EVENTS_FILE, RUN_FILE, UPLOAD_FILE, parsed, read_json, read_lines, write_json

# Well under the server's limits per request (5,000 events, 10,000 points, 64 MB).
BATCH_EVENTS = 500
BATCH_BYTES = 2 << 20


@dataclass
class Progress:
    sent: int = 0  # events the server acknowledged in this session
    rejected: int = 0  # events in batches the server refused as invalid (skipped, reported)
    ended: bool = False  # the server says the run has ended: nothing more will be taken


class Uploader:
    def __init__(self, run_dir: Path, client: Client):
        self.dir = Path(run_dir)
        self.client = client
        self.run = read_json(self.dir / RUN_FILE)
        self.offset = int(read_json(self.dir / UPLOAD_FILE).get("offset", 0))
        self.progress = Progress()
        self.cancel_requested = False

    @property
    def run_id(self) -> int | None:
        value = self.run.get("run_id")
        return int(value) if value is not None else None

    def ensure_run(self) -> int:
        """The run's id on the server, creating it (and its project) first when needed."""
        if self.run_id is not None:
            return self.run_id
        project = self.client.project_id(self.run["project"], self.run.get("team"))
        created = self.client.create_run(
            project, self.run.get("name", ""), self.run.get("config") or {}, self.run.get("tags") or []
        )
        self.run["run_id"] = int(created["id"])
        self.run["project_id"] = project
        write_json(self.dir / RUN_FILE, self.run)
        return self.run["run_id"]

    def pending(self) -> bool:
        try:
            return (self.dir / EVENTS_FILE).stat().st_size > self.offset
        except FileNotFoundError:
            return False

    def send_batch(self) -> bool:
        """Send the next batch; True when one was acknowledged (or skipped), False when none was waiting.

        Raises ``client.Unreachable`` (try again later) and, for a refused run or token,
        ``Refused``. A batch refused as invalid (a 400) is skipped and counted: the same
        bytes would be refused forever, and the rest of the run must not wait behind them.
        """
        run_id = self.ensure_run()
        lines, end = read_lines(self.dir / EVENTS_FILE, self.offset, BATCH_EVENTS, BATCH_BYTES)
        if end == self.offset:
            return False
        if lines:
            try:
                try:
                    self._answered(self.client.send_event_lines(run_id, lines))
                    sent = len(lines)
                except Refused as exc:
                    # A line that is not JSON (a crash's torn line) spoils the raw batch: send the rest.
                    events = parsed(lines)
                    if exc.status != 400 or len(events) == len(lines):
                        raise
                    self._answered(self.client.send_events(run_id, events))
                    sent = len(events)
            except Refused as exc:
                if exc.status == 409:  # ended: a finished run takes nothing more
                    self.progress.ended = True
                elif exc.status == 400:
                    self.progress.rejected += len(lines)
                    print(f"runwright: the server refused {len(lines)} events: {exc}", file=sys.stderr)
                else:
                    raise
            else:
                self.progress.sent += sent
        self._acknowledge(end)
        return True

    def push_config(self, config: dict[str, Any]) -> None:
        """Params added to the run's config (merged on the server: sending them twice is harmless)."""
        if config:
            self.client.call("POST", f"runs/{self.ensure_run()}/params", {"config": config})

    def heartbeat(self) -> None:
        self._answered(self.client.heartbeat(self.ensure_run()))

    def _answered(self, answer: dict[str, Any]) -> None:
        self.cancel_requested = bool(answer.get("cancel_requested"))
        if answer.get("status") in ("completed", "failed", "cancelled"):
            self.progress.ended = True

    def _acknowledge(self, offset: int) -> None:
        self.offset = offset
        write_json(self.dir / UPLOAD_FILE, {"offset": offset})
