"""The oneDNN float32 matmuls (modelcore.kernels.cpu_gemm) against torch's own, on CPU.

Reference: the same product in float64. Tolerances: a float32 dot product of length K
rounds to ~K * 2^-24 of the sum of |terms|; at the sizes here (K <= 512, unit-variance
inputs) both oneDNN and torch's BLAS stay within atol 2e-4 / rtol 1e-4 of float64. The
test also holds oneDNN to at most 4x torch's own error (measured 1.5-3x: it blocks the sums
differently); reduced-precision math (bf16/tf32) would be ~1000x off.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from modelcore import kernels
from modelcore.kernels import cpu_gemm

pytestmark = pytest.mark.skipif(
    not cpu_gemm._AVAILABLE, reason="oneDNN matmuls are used on x86 CPUs with mkldnn only"
)

ATOL, RTOL = 2e-4, 1e-4


def _inputs(shape_x: tuple[int, ...], out: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape_x, generator=gen)
    w = torch.randn(out, shape_x[-1], generator=gen) * shape_x[-1] ** -0.5
    return x, w


def _value_and_grads(fn, x: torch.Tensor, w: torch.Tensor, upstream: torch.Tensor):
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    y = fn(x, w)
    gx, gw = torch.autograd.grad(y, (x, w), upstream.to(y.dtype))
    return y, gx, gw


def _max_errors(got, ref) -> list[float]:
    return [(a.double() - b).abs().max().item() for a, b in zip(got, ref, strict=True)]


@pytest.mark.parametrize("shape_x", [(512, 256), (4, 128, 256)])
def test_linear_equals_f_linear_forward_and_grads(shape_x: tuple[int, ...]):
    x, w = _inputs(shape_x, 384)
    assert cpu_gemm.use_onednn(x, w), "this size must take the oneDNN path"
    upstream = torch.randn(*shape_x[:-1], 384, generator=torch.Generator().manual_seed(1))
    ours = _value_and_grads(kernels.linear, x, w, upstream)
    blas = _value_and_grads(F.linear, x, w, upstream)
    exact = _value_and_grads(F.linear, x.double(), w.double(), upstream)
    for a, b in zip(ours, exact, strict=True):
        torch.testing.assert_close(a.double(), b, atol=ATOL, rtol=RTOL)
    for ours_err, blas_err in zip(_max_errors(ours, exact), _max_errors(blas, exact), strict=True):
        assert ours_err <= 4 * blas_err + 1e-6


def test_mm_nt_of_transposed_operands():
    """The fused loss multiplies transposed views (grad.T @ h); oneDNN must read their strides."""
    gen = torch.Generator().manual_seed(2)
    g, h = torch.randn(256, 1024, generator=gen), torch.randn(256, 128, generator=gen)
    got = cpu_gemm.mm_nt(g.t(), h.t())  # (1024, 256) @ (256, 128)
    torch.testing.assert_close(got.double(), g.double().t() @ h.double(), atol=ATOL, rtol=RTOL)


def test_small_multiplies_and_other_dtypes_stay_on_torch():
    x, w = _inputs((64, 64), 64)
    assert not cpu_gemm.use_onednn(x, w)  # below MIN_MACS: oneDNN's call overhead would dominate
    big_x, big_w = _inputs((512, 256), 384)
    assert not cpu_gemm.use_onednn(big_x.double(), big_w.double())
    assert not cpu_gemm.use_onednn(big_x.bfloat16(), big_w.bfloat16())
    with cpu_gemm.blas_matmuls():
        assert not cpu_gemm.use_onednn(big_x, big_w)
    assert cpu_gemm.use_onednn(big_x, big_w)


def test_autocast_still_casts_the_multiply():
    """Mixed precision on the CPU: the product runs in bfloat16, as F.linear's would."""
    x, w = _inputs((512, 256), 384)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_gemm.use_onednn(x, w)
        y = kernels.linear(x, w)
    assert y.dtype == torch.bfloat16


def test_custom_op_registration_is_sound():
    """torch.library's own checks: fake (meta) kernel, autograd registration, schema."""
    x, w = _inputs((256, 128), 64)
    torch.library.opcheck(cpu_gemm.onednn_linear, (x.requires_grad_(), w.requires_grad_()))


@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_linear_under_torch_compile(backend: str):
    """One graph, same numbers: the oneDNN call is an opaque op to Dynamo and Inductor."""
    x, w = _inputs((512, 256), 384, seed=3)
    upstream = torch.randn(512, 384, generator=torch.Generator().manual_seed(4))

    def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return kernels.linear(x, w) * 2.0

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    got = _value_and_grads(compiled, x, w, upstream)
    eager = _value_and_grads(fn, x, w, upstream)
    for a, b in zip(got, eager, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def test_fused_loss_on_onednn_equals_reference():
    """The fused linear + cross-entropy's three products take the oneDNN path at this size."""
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(300, 128, generator=gen)
    w = torch.randn(2048, 128, generator=gen) * 0.1
    t = torch.randint(0, 2048, (300,), generator=gen)
    t[::7] = -100
    assert cpu_gemm.use_onednn(h[:128], w)

    def loss_and_grads(fn):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = fn(hh, ww, t)
        return (loss, *torch.autograd.grad(loss, (hh, ww)))

    ours = loss_and_grads(lambda a, b, c: kernels.fused_linear_cross_entropy(a, b, c, chunk_rows=128))
    ref = loss_and_grads(kernels.linear_cross_entropy_reference)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
