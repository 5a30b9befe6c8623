"""The SDK on its own: its file is the trainer's format, offline mode, a full queue, the context manager."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from pathlib import Path

import pytest
import runwright
from runwright.spool import EventFile

from modelcore.events import EVENTS_FILE, read_events


def events_of(folder: Path) -> list[dict]:
    read = read_events(folder / EVENTS_FILE)
    assert read.bad_lines == []
    return read.events


def test_the_spooled_file_is_read_by_the_trainers_own_reader(tmp_path):
    run = runwright.init("p", "n", mode="offline", dir=tmp_path)
    run.log({"train/loss": 2.5, "nan": math.nan, "big": float("inf"), "not a number": "x"}, step=3)
    run.log({"train/loss": 2.0})  # the next step: 4
    run.log_text("hello", level="warning")
    run.log_system({"cpu/util": 0.5})
    run.finish()
    events = events_of(tmp_path)
    assert [e["type"] for e in events] == ["metric", "metric", "log", "system", "status"]
    assert events[0]["values"] == {"train/loss": 2.5, "nan": None, "big": None}
    assert events[1]["step"] == 4
    assert events[2]["level"] == "warning" and events[2]["message"] == "hello"
    assert events[-1]["status"] == "completed"
    assert [e["seq"] for e in events] == [1, 2, 3, 4, 5]


def test_a_reopened_file_continues_the_seqs_after_a_torn_line(tmp_path):
    first = EventFile(tmp_path)
    first.append("log", {"level": "info", "message": "a"})
    first.close()
    with open(tmp_path / EVENTS_FILE, "ab") as f:
        f.write(b'{"seq": 2, "time": 1.0, "type": "lo')  # a crash mid-line
    second = EventFile(tmp_path)
    second.append("log", {"level": "info", "message": "b"})
    second.close()
    read = read_events(tmp_path / EVENTS_FILE)
    assert [e["seq"] for e in read.events] == [1, 3] and len(read.bad_lines) == 1


def test_offline_mode_writes_only_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("RUNWRIGHT_MODE", "offline")
    monkeypatch.setenv("RUNWRIGHT_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("RUNWRIGHT_TOKEN", "x")
    with runwright.init("p", "n", config={"lr": 0.1}, dir=tmp_path) as run:
        run.log({"loss": 1.0}, step=0)
    assert run.id is None and run.unsent == 0
    record = json.loads((tmp_path / "run.json").read_text())
    assert record["config"] == {"lr": 0.1} and "run_id" not in record
    assert len(events_of(tmp_path)) == 2


def test_a_full_queue_drops_and_counts_and_never_blocks(tmp_path, capfd):
    # The sender waits a minute between rounds: nothing drains the queue while we log.
    run = runwright.init("p", "n", mode="offline", dir=tmp_path, queue_size=10, flush_seconds=60)
    slowest = 0.0
    for step in range(1000):
        start = time.perf_counter()
        run.log({"loss": 1.0}, step=step)
        slowest = max(slowest, time.perf_counter() - start)
    assert run.dropped == 990
    assert slowest < 0.05  # a blocked put would wait the minute
    run.finish()
    events = events_of(tmp_path)
    assert [e["step"] for e in events if e["type"] == "metric"] == list(range(10))
    warning = [e for e in events if e["type"] == "log"]
    assert "dropped 990" in warning[0]["message"] and warning[0]["level"] == "warning"
    assert "990 points or lines were dropped" in capfd.readouterr().err


def test_an_exception_in_the_block_ends_the_run_failed_with_its_traceback(tmp_path):
    with pytest.raises(ZeroDivisionError), runwright.init("p", "n", mode="offline", dir=tmp_path) as run:
        run.log({"loss": 1.0})
        1 / 0  # noqa: B018
    status = events_of(tmp_path)[-1]
    assert status["status"] == "failed" and "ZeroDivisionError" in status["error"]


def test_online_without_url_or_token_says_what_to_set(tmp_path, monkeypatch):
    monkeypatch.delenv("RUNWRIGHT_URL", raising=False)
    monkeypatch.delenv("RUNWRIGHT_TOKEN", raising=False)
    monkeypatch.delenv("RUNWRIGHT_MODE", raising=False)
    with pytest.raises(ValueError, match="RUNWRIGHT_URL"):
        runwright.init("p", "n", dir=tmp_path)


def test_the_sdk_imports_no_django_celery_or_torch():
    code = "import sys, runwright, runwright.cli; print(sorted(m for m in ('django', 'celery', 'torch') if m in sys.modules))"
    sdk = str(Path(runwright.__file__).parents[1])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=sdk, check=True)
    assert out.stdout.strip() == "[]"
