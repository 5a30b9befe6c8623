"""GPU leases: disjoint between runs on one host, released when the holder dies, and a run
that finds too few free GPUs stays queued. GPUs are simulated with RUNWRIGHT_GPUS (the
leases are files and flocks; no CUDA is needed to test who gets which ids)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import pytest
from celery.exceptions import Retry

from modelcore.config import RunConfig, preset
from webapp.runs.models import RunStatus
from workers import gpus
from workers.supervisor import default_command
from workers.tasks import launch_run


@pytest.fixture
def four_gpus(monkeypatch, tmp_path) -> list[str]:
    monkeypatch.setenv("RUNWRIGHT_GPUS", "0,1,2,3")
    monkeypatch.setenv("RUNWRIGHT_GPU_LOCK_DIR", str(tmp_path / "leases"))
    return ["0", "1", "2", "3"]


def _gpu_config(processes: int, device: str = "auto") -> RunConfig:
    data = preset("tiny-cpu").to_dict()
    data["parallel"].update(num_processes=processes, device=device)
    return RunConfig.from_dict(data)


def test_inventory_comes_from_runwright_gpus_first(monkeypatch):
    monkeypatch.setenv("RUNWRIGHT_GPUS", "2, 5")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    assert gpus.host_gpus() == ["2", "5"]
    monkeypatch.setenv("RUNWRIGHT_GPUS", "")
    assert gpus.host_gpus() == []
    monkeypatch.delenv("RUNWRIGHT_GPUS")
    assert gpus.host_gpus() == ["0", "1", "2", "3"]


def test_cpu_runs_and_gpu_less_hosts_need_no_gpus(four_gpus):
    assert gpus.gpus_needed(_gpu_config(2), four_gpus) == 2
    assert gpus.gpus_needed(_gpu_config(2, device="cpu"), four_gpus) == 0
    assert gpus.gpus_needed(_gpu_config(2), []) == 0


def test_concurrent_leases_get_disjoint_gpus_and_release_them(four_gpus):
    with gpus.lease(2) as first, gpus.lease(2) as second:
        assert sorted(first + second) == four_gpus
        with pytest.raises(gpus.GpusBusy, match="1 GPU"), gpus.lease(1):
            pass
    with gpus.lease(4) as all_four:  # everything came back
        assert all_four == four_gpus


def test_a_lease_dies_with_the_process_that_held_it(four_gpus, tmp_path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import fcntl, os, sys, time
                fd = os.open({str(tmp_path / "leases" / "gpu-0.lock")!r}, os.O_RDWR | os.O_CREAT)
                fcntl.flock(fd, fcntl.LOCK_EX)
                print("held", flush=True)
                time.sleep(60)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    (tmp_path / "leases").mkdir(exist_ok=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(gpus.GpusBusy), gpus.lease(1, ["0"]):
            pass
    finally:
        holder.kill()  # SIGKILL: no chance to clean up
        holder.wait()
    deadline = time.monotonic() + 5
    while True:
        try:
            with gpus.lease(1, ["0"]) as got:
                assert got == ["0"]
            break
        except gpus.GpusBusy:
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_more_gpus_than_the_host_has_names_the_field(four_gpus):
    with pytest.raises(ValueError, match="parallel.num_processes: 5 GPUs"), gpus.lease(5):
        pass


def test_the_trainer_sees_only_its_leased_gpus(tmp_path):
    argv, env = default_command(_gpu_config(2), tmp_path, gpu_ids=["1", "3"])
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"
    assert "ACCELERATE_USE_CPU" not in env
    assert argv[argv.index("--num_processes") + 1] == "2"
    with pytest.raises(ValueError, match="parallel.num_processes"):
        default_command(_gpu_config(3), tmp_path, gpu_ids=["1", "3"])


def test_a_run_waits_queued_while_its_gpus_are_leased(four_gpus, make_run):
    run = make_run(config=_gpu_config(2).to_dict())
    # Another run holds three of the four; called directly, the task raises Celery's Retry
    # (through a broker, the same retry re-queues the message for GPU_RETRY_SECONDS later).
    with gpus.lease(3), pytest.raises(Retry):
        launch_run(run.id)
    run.refresh_from_db()
    assert run.status == RunStatus.QUEUED and run.attempt == 0
