"""``manage.py demo`` (what ``make demo`` runs): the whole product comes up, streams a run, stops cleanly."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(predicate, timeout: float, what: str, log: Path):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{what} within {timeout} s; output:\n{log.read_text(errors='replace')[-3000:]}")


def test_demo_serves_a_streaming_run_and_ctrl_c_stops_everything(tmp_path: Path) -> None:
    data_dir, out = tmp_path / "data", tmp_path / "demo.out"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNWRIGHT_", "DJANGO_SETTINGS"))}
    env.update(RUNWRIGHT_DATA_DIR=str(data_dir), RUNWRIGHT_DEMO_PASSWORD="demo-password-1")
    port = _free_port()
    with open(out, "wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        text = _wait_for(
            lambda: "Runwright is up" in out.read_text() and out.read_text(),
            120,
            "the demo did not start",
            out,
        )
        assert f"http://127.0.0.1:{port}/" in text and "demo / demo-password-1" in text
        run_url = re.search(r"Demo run queued: (\S+)", text).group(1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/login/", timeout=10) as response:
            assert response.status == 200

        # The demo run really trains: its events file grows with falling loss metrics.
        events = data_dir / "runs" / run_url.rstrip("/").rsplit("/", 1)[-1] / "events.jsonl"

        def losses() -> list[float]:
            if not events.exists():
                return []
            lines = [json.loads(x) for x in events.read_text().splitlines() if x.strip()]
            return [
                e["values"]["train/loss"]
                for e in lines
                if e["type"] == "metric" and "train/loss" in e["values"]
            ]

        _wait_for(lambda: len(losses()) >= 5, 120, "the demo run did not log losses", out)
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the demo started no processes"
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C sends
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"left running after Ctrl-C: {[p.cmdline() for p in alive]}"
    assert "Stopped." in out.read_text()
