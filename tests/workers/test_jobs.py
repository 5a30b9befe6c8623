"""The process-job runner (workers.jobs) with real subprocesses: watch, stop, reap, final write.

The jobs here are small Python scripts, so each behaviour is seen from the processes
themselves (which signal reached whom, what is still alive), not from the runner's word.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from django.db import InterfaceError, OperationalError

import modelcore
from workers import job_processes, jobs
from workers.jobs import JobRunner, Launch, engine_env, log_tail, retry_db

# A launcher that starts one rank in a session of its own (as torch elastic does) and waits
# for it. Each notes the SIGTERM it gets; the rank exits on it, the launcher only when the rank has.
RANK = (
    "import pathlib, signal, sys, time\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "def on_term(*_):\n"
    "    (out / 'rank.term').write_text('1'); sys.exit(0)\n"
    "signal.signal(signal.SIGTERM, on_term)\n"
    "(out / 'ready').write_text('1')\n"
    "time.sleep(60)\n"
)
LAUNCHER = (
    "import pathlib, signal, subprocess, sys\n"
    "out = pathlib.Path(sys.argv[1])\n"
    "signal.signal(signal.SIGTERM, lambda *_: (out / 'launcher.term').write_text('1'))\n"
    "rank = subprocess.Popen([sys.executable, str(out / 'rank.py'), str(out)], start_new_session=True)\n"
    "rank.wait()\n"
)
DEAF = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(60)\n"
# Exits at once and leaves a process behind in another session, deaf to SIGTERM.
ESCAPER = (
    "import subprocess, sys\n"
    f"subprocess.Popen([sys.executable, '-c', {DEAF!r}], start_new_session=True)\n"
    "print('left one behind', flush=True)\n"
)


@pytest.fixture(autouse=True)
def records(settings, tmp_path) -> Path:
    settings.DATA_DIR = tmp_path / "data"
    return job_processes.records_dir()


class ScriptJob(JobRunner):
    """A job whose subprocess is a Python script; it stops itself once ``stop_when`` holds."""

    noun = "script"

    def __init__(self, folder: Path, script: str, *, stop_when=lambda job: False, **options: Any):
        options.setdefault("kill_after", 5.0)
        super().__init__(
            tag=job_processes.new_tag("test", 1),
            description="test job",
            poll_seconds=0.05,
            heartbeat_seconds=0.1,
            **options,
        )
        self.folder, self.script, self.stop_when = folder, script, stop_when
        self.beats = 0
        self.code: int | None = None
        self.written: list[tuple[str, str, int | None]] = []

    def prepare(self) -> Launch:
        (self.folder / "job.py").write_text(self.script)
        argv = [sys.executable, str(self.folder / "job.py"), str(self.folder)]
        return Launch(argv, {}, cwd=self.folder, log_path=self.folder / "job.log")

    def check(self) -> None:
        if self.stop_when(self):
            self.request_stop("cancel")

    def heartbeat(self) -> None:
        self.beats += 1

    def decide(self, code: int) -> tuple[str, str]:
        self.code = code
        return ("completed" if code == 0 else "failed"), self.stop.reason

    def write_final(self, status: str, error: str) -> bool:
        self.written.append((status, error, self.code))
        return True


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_the_ranks_get_the_sigterm_and_the_launcher_does_not(tmp_path):
    (tmp_path / "rank.py").write_text(RANK)
    job = ScriptJob(tmp_path, LAUNCHER, stop_when=lambda job: (tmp_path / "ready").exists())
    assert job.run_job() == "completed"
    assert (tmp_path / "rank.term").exists()
    assert not (tmp_path / "launcher.term").exists()  # torch elastic would kill its ranks on it
    assert not job.stop.killed and job.written == [("completed", "cancel", 0)]
    assert job.beats >= 1 and job_processes.tagged_processes(job.tag) == []


def test_a_job_deaf_to_sigterm_is_killed_after_the_grace(tmp_path):
    job = ScriptJob(
        tmp_path, DEAF, stop_when=lambda job: "up" in (tmp_path / "job.log").read_text(), kill_after=0.5
    )
    started = time.monotonic()
    assert job.run_job() == "failed"
    assert job.stop.killed and job.written[0][2] == -signal.SIGKILL
    assert time.monotonic() - started < 15


def test_the_time_limit_stops_the_job(tmp_path):
    job = ScriptJob(tmp_path, "import time\ntime.sleep(60)\n", time_limit=0.3)
    assert job.run_job() == "failed"
    assert job.written == [("failed", "timeout", -signal.SIGTERM)]


def test_nothing_the_job_started_outlives_it(tmp_path):
    job = ScriptJob(tmp_path, ESCAPER)
    pid = job.process.start(job.prepare(), "escaper")
    deadline = time.monotonic() + 20
    while "left one behind" not in (tmp_path / "job.log").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    escaped = [p.pid for p in job_processes.tagged_processes(job.tag) if p.pid != pid]
    assert escaped and _alive(escaped[0])
    while not job.process.exited():  # the leader's own end, then whatever it left
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert job.process.reap() == 0
    assert not _alive(escaped[0]) and job_processes.tagged_processes(job.tag) == []
    assert list(job_processes.records_dir().glob("*.json")) == []  # its record is forgotten


def test_the_leader_stays_unreaped_until_the_job_is_reaped(tmp_path):
    """An un-reaped leader keeps its group id: no unrelated, recycled group can be signalled."""
    job = ScriptJob(tmp_path, "raise SystemExit(3)\n")
    pid = job.process.start(job.prepare(), "exits")
    deadline = time.monotonic() + 20
    while not job.process.exited():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE  # seen exited, not reaped
    assert job.process.reap() == 3
    assert not psutil.pid_exists(pid) or psutil.Process(pid).ppid() != os.getpid()


def test_killing_a_live_job_leaves_its_leader_for_the_runner_to_reap(tmp_path):
    """SIGKILL to every tagged process must not reap the leader: its exit code and group id are the runner's."""
    job = ScriptJob(tmp_path, "import time\ntime.sleep(60)\n")
    pid = job.process.start(job.prepare(), "sleeper")
    assert job_processes.kill_tagged(job.tag)  # the leader is alive when they are listed
    assert job.process.exited() and psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert job.process.reap() == -signal.SIGKILL


def test_a_reaped_leader_group_is_never_signalled(tmp_path, monkeypatch):
    job = ScriptJob(tmp_path, "pass\n")
    pid = job.process.start(job.prepare(), "quick")
    job.proc.wait()  # reaped by someone else: the group id is free for reuse
    sent = []
    monkeypatch.setattr(os, "killpg", lambda pgid, sig: sent.append((pgid, sig)))
    job.process.kill_all()
    job.process.terminate()
    assert pid not in {pgid for pgid, _ in sent}


def test_the_final_status_is_retried_through_a_database_outage(tmp_path, monkeypatch):
    monkeypatch.setattr(jobs, "RETRY_WAIT_SECONDS", 0.0)
    failures = [OperationalError("server closed the connection"), InterfaceError("connection already closed")]

    class Flaky(ScriptJob):
        def write_final(self, status, error):
            if failures:
                raise failures.pop(0)
            return super().write_final(status, error)

    job = Flaky(tmp_path, "pass\n")
    assert job.run_job() == "completed"
    assert failures == [] and [w[0] for w in job.written] == ["completed"]


def test_a_final_status_that_never_gets_through_is_left_to_the_sweep(monkeypatch):
    monkeypatch.setattr(jobs, "RETRY_WAIT_SECONDS", 0.01)
    calls = []

    def down():
        calls.append(time.monotonic())
        raise InterfaceError("connection already closed")

    started = time.monotonic()
    assert retry_db(down, "testing", patience=0.3) == (False, None)  # no raise: the job is over anyway
    assert len(calls) >= 3 and time.monotonic() - started < 5
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    assert gaps[-1] > gaps[0]  # it waits longer after each failed try
    with pytest.raises(ValueError):  # not a database outage: a bug, raised at once
        retry_db(lambda: int("x"), "testing")


def test_a_round_that_meets_a_database_error_waits_before_the_next(tmp_path, monkeypatch):
    """During an outage the events stay unread, so a tail that wakes on new lines must not spin."""
    rounds = []

    class Outage(ScriptJob):
        def read_events(self):
            rounds.append(time.monotonic())
            raise OperationalError("connection refused")

        def wait(self, seconds):
            pass  # a tail that would wake at once: new lines are always waiting

    job = Outage(tmp_path, "import time\ntime.sleep(1)\n")
    job.poll_seconds = 0.2
    assert job.run_job() == "completed"
    assert 2 <= len(rounds) <= 8, len(rounds)  # about 1 s / 0.2 s, not thousands


def test_a_job_that_cannot_start_is_failed_with_the_reason(tmp_path):
    job = ScriptJob(tmp_path / "missing", "pass\n")  # its folder does not exist
    assert job.run_job() == "failed"
    assert job.written[0][1].startswith("Could not start the script")


def test_the_job_imports_the_workers_engine_and_keeps_its_own_environment(monkeypatch):
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    env = engine_env({"EXTRA": "1"}, defaults={"HF_HUB_OFFLINE": "1", "ONLY_DEFAULT": "1"})
    root = str(Path(modelcore.__file__).resolve().parent.parent)
    assert env["PYTHONPATH"] == os.pathsep.join([root, "/elsewhere"])
    assert (env["EXTRA"], env["HF_HUB_OFFLINE"], env["ONLY_DEFAULT"]) == ("1", "0", "1")


def test_the_log_tail_starts_at_the_last_sections_traceback(tmp_path):
    path = tmp_path / "launcher.log"
    path.write_text(
        "--- attempt 1\nTraceback (most recent call last):\nold\n--- attempt 2\nnoise\n"
        "Traceback (most recent call last):\n  new\nValueError: x\n"
    )
    assert (
        log_tail(path, 1000, section="--- attempt ")
        == "Traceback (most recent call last):\n  new\nValueError: x\n"
    )
    assert log_tail(path, 5) == "r: x\n"
    assert log_tail(tmp_path / "none.log", 10, missing="(nothing)") == "(nothing)"
