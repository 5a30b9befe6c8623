"""Runs the Triton kernel tests on CPU under TRITON_INTERPRET=1.

The interpreter is chosen when triton is first imported, from the environment, so it
cannot be switched on inside this pytest process: the kernel module runs in a child
pytest with the variable set. On a GPU machine test_triton_kernels.py also runs directly.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")
pytest.importorskip("numpy")  # the interpreter executes kernels with numpy

KERNEL_TESTS = Path(__file__).with_name("test_triton_kernels.py")


def test_triton_kernels_pass_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(KERNEL_TESTS), "-x", "-q", "-p", "no:cacheprovider"],
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout.split("\n")[-2], proc.stdout[-2000:]
