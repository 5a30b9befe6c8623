"""The Triton kernels against the plain-PyTorch references, forward and every gradient.

Runs where a Triton launch can run: on a CUDA GPU, or on CPU tensors under
TRITON_INTERPRET=1 (which must be set before Python starts, so on a CPU-only machine
test_triton_interpreter.py runs this module in a subprocess). Shapes are small because
the interpreter executes every program in Python.

Tolerances: float32 atol 1e-5 / rtol 1e-5 (1e-6 for the cross-entropy gradients, which
are of order 1 / tokens). bfloat16 (GPU only: the interpreter's bf16 arithmetic is
wrong) against the float32 reference at atol 2e-2 / rtol 2e-2, and 1e-2 relative for the
loss.
"""

from __future__ import annotations

import os

import pytest
import torch

from modelcore import kernels

pytest.importorskip("triton")

CUDA = torch.cuda.is_available()
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
pytestmark = pytest.mark.skipif(
    not (CUDA or INTERPRET), reason="needs a CUDA GPU or TRITON_INTERPRET=1 (see test_triton_interpreter.py)"
)
DEVICE = "cuda" if CUDA else "cpu"
DTYPES = [torch.float32, torch.bfloat16] if CUDA else [torch.float32]


def _tol(dtype: torch.dtype) -> dict:
    return {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 2e-2, "rtol": 2e-2}


def _leaf(*shape, seed: int, dtype: torch.dtype, scale: float = 1.0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=gen) * scale).to(DEVICE, dtype).requires_grad_()


def _upstream(tensors, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(t.shape, generator=gen).to(t.device, t.dtype) for t in tensors]


def _compare(ours, ref_fn, inputs, dtype):
    """Triton outputs and grads vs the reference run in float32 on float32 copies of the inputs."""
    ours = ours if isinstance(ours, tuple) else (ours,)
    ref_inputs = [x.detach().float().requires_grad_() for x in inputs]
    ref = ref_fn(*ref_inputs)
    ref = ref if isinstance(ref, tuple) else (ref,)
    up = _upstream(ours)
    ours_grads = torch.autograd.grad(ours, inputs, up)
    ref_grads = torch.autograd.grad(ref, ref_inputs, [u.float() for u in up])
    for a, b in zip(list(ours) + list(ours_grads), list(ref) + list(ref_grads), strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b, **_tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 32), (5, 40)])  # 40: hidden size not a power of two
def test_rms_norm(shape, dtype):
    x, w = _leaf(*shape, seed=1, dtype=dtype), _leaf(shape[-1], seed=2, dtype=dtype)
    ours = kernels.rms_norm(x, w, 1e-5, backend="triton")
    _compare(ours, lambda a, b: kernels.rms_norm_reference(a, b, 1e-5), (x, w), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_swiglu(dtype):
    g, u = (
        _leaf(3, 5, 300, seed=3, dtype=dtype),
        _leaf(3, 5, 300, seed=4, dtype=dtype),
    )  # 4500: not a block multiple
    _compare(kernels.swiglu(g, u, backend="triton"), kernels.swiglu_reference, (g, u), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_rotary_with_fewer_kv_heads(dtype):
    q, k = _leaf(2, 5, 4, 16, seed=5, dtype=dtype), _leaf(2, 5, 2, 16, seed=6, dtype=dtype)
    angles = torch.randn(5, 8, generator=torch.Generator().manual_seed(7)).to(DEVICE)
    cos, sin = angles.cos(), angles.sin()

    def ref(a, b):
        return kernels.apply_rotary_reference(a, b, cos, sin)

    _compare(kernels.apply_rotary(q, k, cos, sin, backend="triton"), ref, (q, k), dtype)


def test_rotary_reads_strided_views():
    # q and k as views into one fused projection, as a packed-qkv model would give them.
    qkv = _leaf(2, 5, 3, 4, 16, seed=8, dtype=torch.float32)
    q, k = qkv[:, :, 0], qkv[:, :, 1]
    angles = torch.randn(5, 8, generator=torch.Generator().manual_seed(9)).to(DEVICE)
    cos, sin = angles.cos(), angles.sin()
    ours = kernels.apply_rotary(q, k, cos, sin, backend="triton")
    ref = kernels.apply_rotary_reference(q, k, cos, sin)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("chunk_rows", [8, None])
def test_fused_linear_cross_entropy(chunk_rows, dtype):
    h, w = _leaf(2, 20, 16, seed=10, dtype=dtype), _leaf(300, 16, seed=11, dtype=dtype, scale=0.3)
    t = torch.randint(0, 300, (2, 20), generator=torch.Generator().manual_seed(12)).to(DEVICE)
    t[:, ::6] = -100
    loss = kernels.fused_linear_cross_entropy(h, w, t, backend="triton", chunk_rows=chunk_rows)
    hr, wr = h.detach().float().requires_grad_(), w.detach().float().requires_grad_()
    ref = kernels.linear_cross_entropy_reference(hr, wr, t)
    loss.backward()
    ref.backward()
    assert loss.dtype == torch.float32
    if dtype == torch.float32:
        torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(h.grad, hr.grad, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(w.grad, wr.grad, atol=1e-6, rtol=1e-5)
    else:
        torch.testing.assert_close(loss, ref, atol=0.0, rtol=1e-2)
        torch.testing.assert_close(h.grad.float(), hr.grad, atol=2e-3, rtol=5e-2)
        torch.testing.assert_close(w.grad.float(), wr.grad, atol=2e-3, rtol=5e-2)


def test_cross_entropy_rows_wider_than_one_block():
    # vocab 2500 > the 1024-wide block on CPU (4096 on GPU: 5000 covers both), so the
    # online log-sum-exp really runs over several blocks.
    vocab = 5000 if CUDA else 2500
    h, w = _leaf(6, 8, seed=13, dtype=torch.float32), _leaf(vocab, 8, seed=14, dtype=torch.float32)
    t = torch.tensor([0, vocab - 1, 1234, -100, 17, 2047], device=DEVICE)
    loss = kernels.fused_linear_cross_entropy(h, w, t, backend="triton")
    hr, wr = h.detach().requires_grad_(), w.detach().requires_grad_()
    ref = kernels.linear_cross_entropy_reference(hr, wr, t)
    loss.backward()
    ref.backward()
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(h.grad, hr.grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(w.grad, wr.grad, atol=1e-6, rtol=1e-5)
