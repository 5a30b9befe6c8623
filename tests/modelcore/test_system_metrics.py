"""System metrics: each rank's sample named by rank, written by rank 0 at its interval."""

from __future__ import annotations

import math
import time

import torch

from modelcore.config import resolve
from modelcore.system_metrics import SystemMetrics, event_values, sample


def test_event_values_name_each_rank_and_leave_out_what_a_rank_could_not_read() -> None:
    values = event_values([{"cpu_util": 0.5, "gpu_util": math.nan}, {"cpu_util": 1.5, "gpu_util": 0.9}])
    assert values == {
        "system/cpu_util/rank0": 0.5,
        "system/cpu_util/rank1": 1.5,
        "system/gpu_util/rank1": 0.9,
    }


def test_a_cpu_rank_reports_cpu_and_memory_and_no_gpu_fields() -> None:
    values = sample(torch.device("cpu"))
    assert set(values) == {"cpu_util", "ram_gb", "host_cpu_util", "host_ram_used_gb"}
    assert values["ram_gb"] > 0.01 and 0 <= values["host_cpu_util"] <= 1


def test_cpu_use_of_the_rank_is_measured_between_samples() -> None:
    metrics = SystemMetrics(1, torch.device("cpu"), rank=0, world=1, clock=lambda: 0.0)
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # keep this process busy between two samples
        pass
    values = metrics.collect()
    assert values is not None and values["system/cpu_util/rank0"] > 0.02  # a fresh Process read 0.0


def test_rank_zero_writes_once_per_interval_of_its_clock() -> None:
    now = [100.0]
    metrics = SystemMetrics(30, torch.device("cpu"), rank=0, world=1, clock=lambda: now[0])
    first = metrics.collect()
    assert first is not None and "system/ram_gb/rank0" in first and "system/cpu_util/rank0" in first
    now[0] += 29
    assert metrics.collect() is None
    now[0] += 1
    assert metrics.collect() is not None


def test_other_ranks_never_write_and_zero_turns_it_off() -> None:
    assert SystemMetrics(30, torch.device("cpu"), rank=1, world=1).collect() is None
    assert SystemMetrics(0, torch.device("cpu"), rank=0, world=1).collect() is None


def test_the_interval_is_a_validated_config_field() -> None:
    assert resolve("tiny-cpu").train.system_metrics_every_s == 30
    cfg = resolve("tiny-cpu", {"train": {"system_metrics_every_s": 5}})
    assert cfg.train.system_metrics_every_s == 5
