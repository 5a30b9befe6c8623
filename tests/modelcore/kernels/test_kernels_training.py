"""30 training steps with kernels=triton and kernels=torch give the same losses.

- Model level, Triton kernels really running: the interpreter must be on before triton is
  imported, so the training runs in a child process (train_losses.py) with
  TRITON_INTERPRET=1. Tolerance: every step's loss within 1e-4 absolute (float32 kernels
  differ by ~1e-6 per op; 30 AdamW steps grow that to ~1e-5).
- Trainer level (``python -m modelcore.train``) on a CPU machine: a run configured with
  kernels=triton must still train, on the torch path, to exactly the kernels=torch losses.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from modelcore.events import read_events

pytest.importorskip("triton")
pytest.importorskip("numpy")

SCRIPT = Path(__file__).with_name("train_losses.py")
REPO = Path(__file__).resolve().parents[3]


def test_triton_and_torch_kernels_train_to_the_same_losses():
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--steps", "30"], env=env, capture_output=True, text=True, timeout=540
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["triton_kernels_loaded"], (
        "the triton backend fell back to torch instead of running its kernels"
    )
    torch_losses, triton_losses = result["torch"], result["triton"]
    assert len(torch_losses) == len(triton_losses) == 30
    for step, (a, b) in enumerate(zip(torch_losses, triton_losses, strict=True), start=1):
        assert abs(a - b) <= 1e-4, f"step {step}: torch {a} vs triton {b}"
    assert triton_losses[-1] < triton_losses[0] - 1.0, "the model did not learn"


def _trainer_losses(run_dir: Path, kernels: str, cache: Path) -> list[float]:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.update({"RUNWRIGHT_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""})
    settings = {
        "model.kernels": kernels,
        "train.max_steps": 30,
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.checkpoint_every": 0,
        "parallel.num_processes": 1,
    }
    cmd = [sys.executable, "-m", "modelcore.train", "--run-dir", str(run_dir), "--preset", "tiny-cpu"]
    for key, value in settings.items():
        cmd += ["--set", f"{key}={value}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    events = read_events(run_dir / "events.jsonl").events
    assert events[-1]["type"] == "status" and events[-1]["status"] == "completed"
    return [
        e["values"]["train/loss"] for e in events if e["type"] == "metric" and "train/loss" in e["values"]
    ]


def test_trainer_with_triton_kernels_on_cpu_trains_like_torch(tmp_path):
    torch_losses = _trainer_losses(tmp_path / "torch", "torch", tmp_path / "cache")
    triton_losses = _trainer_losses(tmp_path / "triton", "triton", tmp_path / "cache")
    assert len(torch_losses) == 30
    assert triton_losses == torch_losses
