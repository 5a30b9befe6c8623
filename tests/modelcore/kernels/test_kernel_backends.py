"""Dispatch of the fused ops: the "compile" backend against the references (float32, CPU),
the Triton fallback on CPU tensors, backend validation, and a cheap ``import modelcore.kernels``.

Tolerance for compiled ops: atol 1e-5 / rtol 1e-5 (inductor may reorder float32 reductions).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from modelcore import kernels

ATOL, RTOL = 1e-5, 1e-5


def _grads(outputs, inputs, seed: int = 0):
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    gen = torch.Generator().manual_seed(seed)
    upstream = [torch.randn(o.shape, generator=gen) for o in outputs]
    return torch.autograd.grad(outputs, inputs, upstream)


def _leaf(*shape, seed: int):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).requires_grad_()


def _rotary_tables(seq_len: int, half: int):
    angles = torch.randn(seq_len, half, generator=torch.Generator().manual_seed(9))
    return angles.cos(), angles.sin()


def _check_op(backend: str, name: str) -> None:
    if name == "rms_norm":
        x, w = _leaf(2, 5, 24, seed=1), _leaf(24, seed=2)
        ours, ref = kernels.rms_norm(x, w, 1e-5, backend=backend), kernels.rms_norm_reference(x, w, 1e-5)
        inputs = (x, w)
    elif name == "swiglu":
        g, u = _leaf(3, 7, 20, seed=3), _leaf(3, 7, 20, seed=4)
        ours, ref = kernels.swiglu(g, u, backend=backend), kernels.swiglu_reference(g, u)
        inputs = (g, u)
    elif name == "apply_rotary":
        q, k = _leaf(2, 6, 4, 16, seed=5), _leaf(2, 6, 2, 16, seed=6)
        cos, sin = _rotary_tables(6, 8)
        ours = kernels.apply_rotary(q, k, cos, sin, backend=backend)
        ref = kernels.apply_rotary_reference(q, k, cos, sin)
        inputs = (q, k)
    else:
        h, w = _leaf(30, 8, seed=7), _leaf(50, 8, seed=8)
        t = torch.randint(0, 50, (30,), generator=torch.Generator().manual_seed(0))
        t[::4] = -100
        ours = kernels.fused_linear_cross_entropy(h, w, t, backend=backend, chunk_rows=8)
        ref = kernels.linear_cross_entropy_reference(h, w, t)
        inputs = (h, w)
    torch.testing.assert_close(ours, ref, atol=ATOL, rtol=RTOL)
    for a, b in zip(_grads(ours, inputs), _grads(ref, inputs), strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


@pytest.mark.parametrize("name", ["rms_norm", "swiglu", "apply_rotary", "fused_linear_cross_entropy"])
def test_compile_backend_matches_reference_forward_and_backward(name):
    _check_op("compile", name)


@pytest.mark.parametrize("name", ["rms_norm", "swiglu", "apply_rotary", "fused_linear_cross_entropy"])
def test_triton_on_cpu_without_interpreter_falls_back_to_torch(name, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    # A None entry makes any import of the Triton module fail, so passing proves it was not used.
    monkeypatch.setitem(sys.modules, "modelcore.kernels.triton_ops", None)
    _check_op("triton", name)


def test_unknown_backend_is_a_value_error():
    x = torch.randn(2, 4)
    with pytest.raises(ValueError, match="kernel backend must be one of"):
        kernels.swiglu(x, x, backend="cuda")


def test_compiled_function_is_built_once_per_op():
    from modelcore.kernels.compiled import compiled

    assert compiled("swiglu") is compiled("swiglu")


def test_import_needs_neither_triton_nor_a_gpu():
    code = "import sys, modelcore.kernels; sys.exit(1 if 'triton' in sys.modules else 0)"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr or "importing modelcore.kernels imported triton"
