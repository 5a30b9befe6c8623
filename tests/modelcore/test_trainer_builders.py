"""The trainer's pieces alone, in this process: the fault plan and the builders of one CPU process."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from modelcore.checkpoint import list_checkpoints
from modelcore.config import resolve
from modelcore.trainer import FaultPlan, Trainer


def test_fault_plan_reads_the_environment_and_names_a_bad_value() -> None:
    plan = FaultPlan.from_env({"RUNWRIGHT_FAIL_AT_STEP": "3", "RUNWRIGHT_STOP_AT_STEP": " "})
    assert plan == FaultPlan(fail_at_step=3)
    assert FaultPlan.from_env({}) == FaultPlan()
    with pytest.raises(ValueError, match="RUNWRIGHT_HANG_AT_STEP must be a step number, got 'x'"):
        FaultPlan.from_env({"RUNWRIGHT_HANG_AT_STEP": "x"})


def test_fault_plan_fails_stops_and_hangs_at_its_steps() -> None:
    flag = SimpleNamespace(requested=False)
    FaultPlan().before_step(1, True, flag)
    with pytest.raises(RuntimeError, match="injected failure at step 2"):
        FaultPlan(fail_at_step=2).before_step(2, False, flag)
    FaultPlan(fail_at_step=2).before_step(1, False, flag)
    assert [FaultPlan(stop_at_step=3).stops_after(s) for s in (2, 3, 4)] == [False, True, True]
    assert not FaultPlan().stops_after(5)
    FaultPlan(hang_at_step=2).before_step(2, False, flag)  # only the last rank hangs
    threading.Timer(0.3, lambda: setattr(flag, "requested", True)).start()
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="hung rank signalled to stop"):
        FaultPlan(hang_at_step=2).before_step(2, True, flag)
    assert time.monotonic() - started >= 0.25


@pytest.fixture
def restored_torch_state() -> Iterator[None]:
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.usefixtures("restored_torch_state")
def test_one_process_trainer_built_in_this_process_stops_where_its_fault_plan_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RUNWRIGHT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = resolve(
        "tiny-cpu",
        {
            "parallel": {"num_processes": 1, "activation_checkpointing": True},
            "data": {"max_corpus_mb": 0.1},
            "train": {"max_steps": 10, "eval_every": 0, "log_every": 1},
        },
    )
    trainer = Trainer(
        cfg, tmp_path / "run", None, SimpleNamespace(requested=False), FaultPlan(stop_at_step=2)
    )
    assert (trainer.world, trainer.tp, trainer.dp, trainer.mesh) == (1, 1, 1, None)
    assert trainer.parallel_mode == "single" and not trainer.sharded
    assert trainer.tokens_per_step == cfg.tokens_per_step()
    assert trainer.val_batches == []  # eval_every 0
    assert trainer.run() == "cancelled"
    assert [step for step, _ in list_checkpoints(tmp_path / "run")] == [2]
