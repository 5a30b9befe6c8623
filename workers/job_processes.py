"""The processes of one job (a trainer with its ranks, an evaluator): tagged, recorded, reaped.

Every process a job starts carries ``RUNWRIGHT_JOB_TAG=<tag>`` in its environment, which
every descendant inherits: torch elastic starts each rank in a session of its own, so a
process group does not hold a whole trainer, but the tag does. ``/proc/<pid>/environ``
is fixed at exec, so a recycled pid never carries an old tag: a process found by tag is
ours.

While a job runs, its supervisor keeps a record of it in
``DATA_DIR/workers/<host>/<tag>.json`` (process group, the supervisor's pid and start
time, the boot id). The processes die with their supervisor (``modelcore.parent_death``);
where that failed (a rank that escaped before it set the signal), a worker that starts,
and every launch before it leases GPUs, kills what is left of jobs whose supervisor is
gone (``reap_orphans``). The GPU leases (``workers.gpus``) use ``tagged_processes`` to
stay taken until a dead holder's processes are gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import time
import uuid
from pathlib import Path

import psutil
from django.conf import settings

from modelcore.parent_death import DIE_WITH_PARENT_ENV

log = logging.getLogger(__name__)

TAG_ENV = "RUNWRIGHT_JOB_TAG"
KILL_WAIT_SECONDS = 10.0


def new_tag(kind: str, job_id: int) -> str:
    """A tag unique to one start of one job, e.g. ``run-12-3f9c0a1b2c4d``."""
    return f"{kind}-{job_id}-{uuid.uuid4().hex[:12]}"


def job_env(tag: str) -> dict[str, str]:
    """What a job's launcher adds to its environment: the tag, and the ranks' parent-death signal."""
    return {TAG_ENV: tag, DIE_WITH_PARENT_ENV: "1"}


def records_dir() -> Path:
    """This host's records (the data directory may be shared between hosts; pids are not)."""
    return Path(settings.DATA_DIR) / "workers" / socket.gethostname()


def boot_id() -> str:
    """Changes with every boot of the machine: a record from an earlier boot names no live process."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def record_job(tag: str, pgid: int, description: str) -> bool:
    """Remember a started job until ``forget_job``: what a later worker needs to reap it.

    Never raises: the job is already running, and a record that cannot be written (a
    full or read-only disk) only loses the reaping of a rare escaped process.
    """
    me = psutil.Process()
    record = {
        "tag": tag,
        "pgid": pgid,
        "supervisor_pid": me.pid,
        "supervisor_started": me.create_time(),
        "boot_id": boot_id(),
        "job": description,
        "started": time.time(),
    }
    folder = records_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{tag}.tmp"
        tmp.write_text(json.dumps(record), encoding="utf-8")
        os.replace(tmp, folder / f"{tag}.json")
    except OSError:
        log.warning("could not record job %s in %s", tag, folder, exc_info=True)
        return False
    return True


def forget_job(tag: str) -> None:
    with contextlib.suppress(OSError):
        (records_dir() / f"{tag}.json").unlink(missing_ok=True)


def tagged_processes(tag: str) -> list[psutil.Process]:
    """Live (not zombie) processes of this user whose environment carries ``tag``."""
    if not tag:
        return []
    needle = f"{TAG_ENV}={tag}".encode()
    found = []
    me = os.getpid()
    for proc in psutil.process_iter():
        if proc.pid == me:
            continue
        try:
            environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
            if needle in environ.split(b"\0") and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (OSError, psutil.Error):
            continue  # gone, or another user's
    return found


def kill_tagged(tag: str, timeout: float = KILL_WAIT_SECONDS) -> bool:
    """SIGKILL every process of the job and wait for them to go; returns whether they are gone."""
    deadline = time.monotonic() + timeout
    while True:
        alive = tagged_processes(tag)
        if not alive:
            return True
        if time.monotonic() >= deadline:
            return False
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signal.SIGKILL)
        # Not psutil.wait_procs: it reaps the processes that are our children, a job's
        # leader among them, whose exit code would be lost and whose group id could be
        # reused while its runner may still signal it. A killed leader stays a zombie
        # (not listed) until its runner reaps it; the others are reaped by their parents.
        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))


def _supervisor_alive(record: dict) -> bool:
    try:
        proc = psutil.Process(int(record["supervisor_pid"]))
        return (
            abs(proc.create_time() - float(record["supervisor_started"])) < 1.0
            and proc.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def reap_orphans(timeout: float = KILL_WAIT_SECONDS) -> list[str]:
    """Kill the processes of jobs on this host whose supervisor is gone; returns their tags.

    A job whose supervisor still lives (another pool process, another worker on this
    host) is left alone. A record is dropped once nothing of its job is left.
    """
    folder = records_dir()
    if not folder.is_dir():
        return []
    reaped = []
    current_boot = boot_id()
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            tag = str(record["tag"])
        except (OSError, ValueError, KeyError, TypeError):
            path.unlink(missing_ok=True)  # half written by a supervisor killed mid-write
            continue
        if record.get("boot_id") and record["boot_id"] != current_boot:
            path.unlink(missing_ok=True)  # the machine rebooted since: nothing of it runs
            continue
        if _supervisor_alive(record):
            continue
        if tagged_processes(tag):
            log.warning("reaping processes of %s (%s) left by a dead supervisor", tag, record.get("job"))
            reaped.append(tag)
        if kill_tagged(tag, timeout):
            path.unlink(missing_ok=True)
        else:
            log.error("processes of %s survived SIGKILL for %.0f s; leaving its record", tag, timeout)
    return reaped
