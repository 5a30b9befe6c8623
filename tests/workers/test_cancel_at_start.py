"""A stop that reaches the real trainer before its SIGTERM handler, or after its last line, is never fatal.

A worker starts the trainer (and a launcher, whose ranks inherit it) with SIGTERM blocked
(``workers.jobs.Launch.hold_sigterm``): ``modelcore.train`` unblocks it once its handler is
set, so a cancel sent while the interpreter starts waits for the handler instead of killing
the rank with -15. Once the final status is written the trainer ignores SIGTERM: Python puts
the default action back while it shuts down, where a late stop (a peer node's, a cancel that
raced the end) killed a rank that had finished cleanly, and torch elastic reported its node failed.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from modelcore.config import RunConfig, preset
from modelcore.events import EVENTS_FILE
from modelcore.launch import holds_sigterm, launch_command
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from workers.jobs import engine_env
from workers.supervisor import LAUNCHER_LOG, supervise

pytestmark = pytest.mark.slow


def processes(count: int) -> RunConfig:
    return RunConfig.from_dict({"parallel": {"num_processes": count}}, base=preset("tiny-cpu"))


def statuses(run_dir) -> list[str]:
    """The final statuses the trainer itself reported (rank 0's status events after ``running``)."""
    path = run_dir / EVENTS_FILE
    if not path.exists():
        return []
    found = []
    for line in path.read_text().splitlines():
        event = json.loads(line)
        if event.get("type") == "status" and event.get("status") != "running":
            found.append(event["status"])
    return found


def test_only_commands_that_run_the_trainer_hold_sigterm(tmp_path):
    one, _ = launch_command(preset("tiny-cpu"), tmp_path)
    two, _ = launch_command(processes(2), tmp_path)
    assert holds_sigterm(one) and holds_sigterm(two)
    assert not holds_sigterm([sys.executable, "fake_trainer.py", "--run-dir", str(tmp_path)])
    assert not holds_sigterm([sys.executable, "-m", "modelcore.evaluate"])


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("count", [1, 2], ids=["one-process", "launcher-and-ranks"])
def test_a_cancel_sent_as_the_trainer_starts_ends_in_the_trainers_own_cancelled_report(make_run, count):
    config = processes(count).to_dict()
    run = transitions.claim_for_launch(make_run(config=config).id, "test-worker")
    assert run is not None
    # The cancel is there before the start: the first round sends SIGTERM while the interpreter
    # (one process) or the launcher (two: no rank yet, they inherit the block) still starts.
    Run.objects.filter(pk=run.pk).update(cancel_requested=True)
    assert supervise(run, poll_seconds=0.05, kill_after=120.0) == RunStatus.CANCELLED
    run.refresh_from_db()
    log = (run.run_dir / LAUNCHER_LOG).read_text()
    # Without the block, SIGTERM killed the process before its handler: no report, -15.
    assert statuses(run.run_dir) == ["cancelled"], log[-3000:]
    assert run.error == "" and "ChildFailedError" not in log and "exitcode" not in log, log[-3000:]


# A trainer whose interpreter, shutting down after main returned, gets a late SIGTERM (as a
# peer node's stop can race a rank's end): module teardown runs after Python restored SIG_DFL.
LATE_STOP = """
import os, signal, sys, time
from modelcore.train import main

class LateStop:
    # Module globals are gone by then: what it needs is bound now.
    def __del__(self, kill=os.kill, pid=os.getpid(), sig=signal.SIGTERM, sleep=time.sleep):
        kill(pid, sig)
        sleep(0.5)

late = LateStop()
sys.exit(main(sys.argv[1:]))
"""


def test_a_sigterm_before_the_handler_waits_for_it_and_one_after_the_end_is_ignored(tmp_path):
    def block_sigterm():
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # as workers.jobs starts it

    proc = subprocess.Popen(
        [sys.executable, "-c", LATE_STOP, "--run-dir", str(tmp_path), "--preset", "tiny-cpu"],
        env=engine_env({"OMP_NUM_THREADS": "1"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=block_sigterm,
    )
    time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)  # before the handler: pending until the trainer unblocks it
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]  # -15 without ignore_late_sigterm
    assert "SIGTERM received" in out, out[-3000:]
    assert statuses(tmp_path) == ["cancelled"], out[-3000:]
