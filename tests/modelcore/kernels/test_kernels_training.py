"""30 training steps of a tiny model with kernels=triton (Triton interpreter, CPU) and kernels=torch.

The interpreter must be on before triton is imported, so the training runs in a child
process (train_losses.py) with TRITON_INTERPRET=1. Tolerance: every step's loss within
1e-4 absolute (float32 kernels differ by ~1e-6 per op; 30 AdamW steps grow that to ~1e-5).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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
