"""The SDK against a live uvicorn: an outage mid-run, a finish while down, offline runs synced later."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
import runwright
from runwright.client import Refused
from sdk_support import OUTAGE_SECONDS, SDK

from webapp.accounts.services import create_api_token
from webapp.annotations.models import RunTag
from webapp.metrics.models import MetricPoint
from webapp.runs.models import Run, RunLog, RunSource, RunStatus


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def stored(run_id: int, key: str) -> dict[int, float | None]:
    return dict(MetricPoint.objects.filter(run_id=run_id, key=key).values_list("step", "value"))


def loss(step: int) -> float:
    return round(10.0 / (step + 1), 6)


def test_server_down_mid_run_then_back_loses_and_doubles_no_point(proxy, token, project, tmp_path):
    run = runwright.init(
        project.name,
        "outage",
        config={"optim": {"lr": 0.1}},
        tags=["sdk"],
        url=f"http://127.0.0.1:{proxy.port}",
        token=token,
        dir=tmp_path / "run",
        flush_seconds=0.05,
        max_backoff_seconds=0.5,
    )
    assert run.id is not None
    for step in range(200):
        run.log({"train/loss": loss(step), "tokens": step * 512}, step=step)
    wait_for(lambda: len(stored(run.id, "train/loss")) == 200, "the first 200 steps")

    proxy.down()
    outage_ends = time.monotonic() + OUTAGE_SECONDS
    step = 200
    while time.monotonic() < outage_ends:  # training goes on, logging at its pace
        start = time.perf_counter()
        run.log({"train/loss": loss(step), "tokens": step * 512}, step=step)
        assert time.perf_counter() - start < 0.05
        step += 1
        time.sleep(0.002)
    assert len(stored(run.id, "train/loss")) == 200  # nothing got through: the outage was real
    proxy.up()

    after_outage = step
    for step in range(after_outage, after_outage + 200):
        run.log({"train/loss": loss(step), "tokens": step * 512}, step=step)
    run.log_text("done")
    run.finish(timeout=60)
    last = after_outage + 199

    assert run.dropped == 0 and run.unsent == 0
    assert stored(run.id, "train/loss") == {s: loss(s) for s in range(last + 1)}
    assert stored(run.id, "tokens") == {s: float(s * 512) for s in range(last + 1)}
    row = Run.objects.get(pk=run.id)
    assert row.source == RunSource.EXTERNAL and row.status == RunStatus.COMPLETED
    assert row.step == last and row.last_loss == loss(last)
    assert row.config == {"params": {"optim.lr": 0.1}}
    assert list(RunTag.objects.filter(run=row).values_list("name", flat=True)) == ["sdk"]
    assert list(RunLog.objects.filter(run=row).values_list("message", flat=True)) == ["done"]
    assert proxy.accepted >= 2  # connected again after the outage, through the proxy


def test_a_finish_while_the_server_is_down_leaves_the_rest_for_sync(proxy, token, project, tmp_path, capfd):
    folder = tmp_path / "run"
    url = f"http://127.0.0.1:{proxy.port}"
    run = runwright.init(project.name, "cut", url=url, token=token, dir=folder, max_backoff_seconds=0.2)
    run.log({"loss": 1.0}, step=0)
    # Acknowledged, not only stored: an answer cut off by the outage would be sent again.
    wait_for(lambda: run._uploader.offset > 0 and not run._uploader.pending(), "the first point's answer")
    proxy.down()
    for step in range(1, 100):
        run.log({"loss": 1.0 / step}, step=step)
    run.finish(timeout=1)
    assert run.unsent == 100  # 99 points and the status
    assert f"runwright sync {folder}" in capfd.readouterr().err
    assert Run.objects.get(pk=run.id).status == RunStatus.RUNNING

    proxy.up()
    result = runwright.sync(folder, url=url, token=token)
    assert (result.run_id, result.sent) == (run.id, 100)
    assert stored(run.id, "loss") == {0: 1.0, **{s: 1.0 / s for s in range(1, 100)}}
    assert Run.objects.get(pk=run.id).status == RunStatus.COMPLETED


def test_an_offline_run_is_synced_by_the_command_once_and_again_harmlessly(server, token, project, tmp_path):
    folder = tmp_path / "offline"
    with runwright.init(project.name, "plane", config={"bs": 8}, mode="offline", dir=folder) as run:
        for step in range(300):
            run.log({"loss": loss(step)}, step=step)
        run.log_text("landed")
    env = {**os.environ, "RUNWRIGHT_URL": server, "RUNWRIGHT_TOKEN": token, "PYTHONPATH": str(SDK)}

    def sync() -> str:
        done = subprocess.run(
            [sys.executable, "-m", "runwright", "sync", str(folder)], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "302 events uploaded" in sync()
    (created,) = Run.objects.filter(name="plane")
    assert created.status == RunStatus.COMPLETED and created.config == {"params": {"bs": 8}}
    assert stored(created.id, "loss") == {s: loss(s) for s in range(300)}
    assert "0 events uploaded" in sync()
    # Even a sync that forgot how far it got (its upload.json lost) adds no run and no point.
    (folder / "upload.json").unlink()
    sync()
    assert Run.objects.filter(name="plane").count() == 1
    assert MetricPoint.objects.filter(run=created).count() == 300
    assert RunLog.objects.filter(run=created).count() == 1


def test_a_viewers_token_is_refused_at_init_with_the_reason(server, bob, project, tmp_path):
    with pytest.raises(Refused, match="member"):
        runwright.init(project.id, "x", url=server, token=create_api_token(bob), dir=tmp_path)


def test_a_crash_torn_line_in_the_file_costs_that_line_only(server, token, project, tmp_path):
    folder = tmp_path / "torn"
    first = runwright.init(project.name, "torn", mode="offline", dir=folder)
    first.log({"loss": 1.0}, step=0)
    first._write_queued()  # the sender's next round, now: the line is on disk before the "crash"
    with open(folder / "events.jsonl", "ab") as f:
        f.write(b'{"seq": 2, "time": 1.0, "type": "metric", "step": 1, "values": {"loss": 2')  # the crash
    second = runwright.init(project.name, "torn", mode="offline", dir=folder)  # the script restarted
    second.log({"loss": 3.0}, step=2)
    second.finish()
    first._finished = True  # its thread is a daemon; the process "died"
    result = runwright.sync(folder, url=server, token=token)
    assert stored(result.run_id, "loss") == {0: 1.0, 2: 3.0}
    assert Run.objects.get(pk=result.run_id).status == RunStatus.COMPLETED
