"""launch_command builds a list argv for accelerate launch (no torch needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcore.config import resolve
from modelcore.launch import launch_command, visible_gpus


def test_two_cpu_processes_use_multi_gpu_launcher_with_cpu_env(tmp_path: Path) -> None:
    argv, env = launch_command(resolve("tiny-cpu"), tmp_path, gpus_available=0)
    assert argv[1:3] == ["-m", "accelerate.commands.launch"]
    assert "--multi_gpu" in argv and argv[argv.index("--num_processes") + 1] == "2"
    assert int(argv[argv.index("--main_process_port") + 1]) > 0
    assert argv[argv.index("--run-dir") + 1] == str(tmp_path.resolve())
    assert env["ACCELERATE_USE_CPU"] == "1"


def test_one_process_runs_the_trainer_directly(tmp_path: Path) -> None:
    argv, env = launch_command(
        resolve("tiny-cpu", {"parallel": {"num_processes": 1}}), tmp_path, gpus_available=0
    )
    assert argv[1:] == ["-m", "modelcore.train", "--run-dir", str(tmp_path.resolve())]


def test_gpu_launch_has_no_cpu_flag_and_checks_the_count(tmp_path: Path) -> None:
    cfg = resolve("tiny-cpu", {"parallel": {"num_processes": 4, "device": "auto"}})
    argv, env = launch_command(cfg, tmp_path, gpus_available=8)
    assert "ACCELERATE_USE_CPU" not in env and "--multi_gpu" in argv
    with pytest.raises(ValueError, match="parallel.num_processes"):
        launch_command(cfg, tmp_path, gpus_available=2)


def test_cpu_device_runs_cpu_ranks_even_on_a_gpu_host(tmp_path: Path) -> None:
    argv, env = launch_command(resolve("tiny-cpu"), tmp_path, gpus_available=1)
    assert env["ACCELERATE_USE_CPU"] == "1" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert argv[argv.index("--num_processes") + 1] == "2"


def test_cuda_device_without_a_gpu_names_the_field(tmp_path: Path) -> None:
    cfg = resolve("tiny-cpu", {"parallel": {"device": "cuda"}})
    with pytest.raises(ValueError, match="parallel.device"):
        launch_command(cfg, tmp_path, gpus_available=0)


def test_visible_gpus_honours_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,3")
    assert visible_gpus() == 2
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == 0
