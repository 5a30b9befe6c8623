"""``runwright sync DIR``: upload a run folder that was offline or whose upload was cut short."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from runwright.client import Client
from runwright.spool import EVENTS_FILE, RUN_FILE, read_json
from runwright.upload import Uploader


@dataclass
class SyncResult:
    run_id: int
    sent: int
    rejected: int


def sync(run_dir: str | os.PathLike[str], *, url: str | None = None, token: str | None = None) -> SyncResult:
    """Upload ``run_dir``'s events from where the last upload stopped; running it again changes nothing.

    Raises ``client.Unreachable`` when the server does not answer (run it again later)
    and ``client.Refused`` when it says no (a token without the member role, say).
    """
    folder = Path(run_dir)
    record = read_json(folder / RUN_FILE)
    if not record or not (folder / EVENTS_FILE).exists():
        raise ValueError(f"{folder} is not a run folder: it needs {RUN_FILE} and {EVENTS_FILE}")
    url = url or os.environ.get("RUNWRIGHT_URL") or record.get("url") or ""
    token = token or os.environ.get("RUNWRIGHT_TOKEN") or ""
    if not url or not token:
        raise ValueError("set RUNWRIGHT_URL and RUNWRIGHT_TOKEN (or pass --url and --token)")
    uploader = Uploader(folder, Client(url, token))
    run_id = uploader.ensure_run()
    # Params added after the run was created (``update_config``) are in run.json too.
    if uploader.pending():
        uploader.push_config(record.get("config") or {})
    while not uploader.progress.ended and uploader.send_batch():
        pass
    return SyncResult(run_id, uploader.progress.sent, uploader.progress.rejected)
