"""Float32 matrix multiplies on x86 CPUs through oneDNN instead of the BLAS torch links.

Why: PyTorch's x86 wheels send float32 ``mm``/``linear`` to Intel MKL. On AMD CPUs MKL
runs a generic code path: on the EPYC (Zen 5, AVX-512) of our CI machine it reaches about
100 GFLOP/s per core on the shapes of a small Llama, where oneDNN, which picks its kernels
from the CPU's feature flags, reaches 170-250 on the same shapes, with the same float32
arithmetic (IEEE, no reduced-precision math). Training on the CPU spends most of its time
in these multiplies, so the trainer routes them here.

oneDNN costs ~10 µs more per call, so multiplies smaller than ``MIN_MACS`` multiply-adds
(decode steps, tiny test models) stay on torch's path. Everything else (other dtypes,
autocast, other devices, ``torch.backends.mkldnn`` disabled, non-x86 machines) goes to
torch too.

``linear(x, weight)`` is ``F.linear(x, weight)`` with a gradient; ``mm_nt(a, b)`` is
``a @ b.T`` without one, for code that computes its own gradients (the fused loss). The
oneDNN call is wrapped in a custom op so torch.compile treats it as one opaque kernel
(inductor's own lowering of the oneDNN op expects pre-packed inference weights).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Iterator

import torch
import torch.nn.functional as F

# Below about a million multiply-adds oneDNN's per-call overhead outweighs its faster kernel
# (measured: 64x64x64 takes 17 µs vs 10 µs through MKL; 512x64x192 takes 43 µs vs 69 µs).
MIN_MACS = 1 << 20

# Decided once: torch.compile cannot trace into torch.backends' availability checks. The op is
# private to torch (inductor's CPU path uses it): a build without it simply keeps torch's matmuls.
_AVAILABLE = (
    platform.machine().lower() in ("x86_64", "amd64")
    and torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
)


def _onednn_mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # _linear_pointwise(input (..., K), weight (N, K), bias, post-op "none") = input @ weight.T;
    # it accepts strided (transposed) operands without copying them first.
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


@torch.library.custom_op("modelcore::onednn_linear", mutates_args=())
def onednn_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` (x (..., K), weight (N, K)) computed by oneDNN, with a gradient."""
    return _onednn_mm_nt(x, weight)


@onednn_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
    x, weight = inputs
    ctx.save_for_backward(x, weight)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
    x, weight = ctx.saved_tensors
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = onednn_linear(grad, weight.t())  # (..., N) @ (N, K) -> (..., K)
    if ctx.needs_input_grad[1]:
        grad2d = grad.reshape(-1, grad.shape[-1])  # (M, N)
        x2d = x.reshape(-1, x.shape[-1])  # (M, K)
        grad_w = onednn_linear(grad2d.t(), x2d.t())  # (N, M) @ (M, K) -> (N, K)
    return grad_x, grad_w


onednn_linear.register_autograd(_backward, setup_context=_setup_context)


def use_onednn(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a @ b.T`` (a (..., K), b (N, K)) should run on oneDNN."""
    return (
        _AVAILABLE
        and a.device.type == "cpu"
        and b.device.type == "cpu"
        and a.dtype == torch.float32
        and b.dtype == torch.float32
        and torch.backends.mkldnn.enabled
        # Autocast does not cast a custom op's inputs: under it, F.linear runs in low precision.
        and not torch.is_autocast_enabled("cpu")
        and a.numel() * b.shape[0] >= MIN_MACS
    )


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` without bias (x (..., K), weight (N, K)), on oneDNN where it is faster."""
    if use_onednn(x, weight):
        return onednn_linear(x, weight)
    return F.linear(x, weight)


def mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2-d a (M, K) and b (N, K), outside autograd, on oneDNN where it is faster."""
    if use_onednn(a, b):
        return onednn_linear(a, b)
    return a @ b.t()


@contextlib.contextmanager
def blas_matmuls() -> Iterator[None]:
    """Within the block, float32 matmuls take torch's own BLAS path (to compare the two).

    Only the mkldnn switch is flipped: ``torch.backends.mkldnn.flags`` would also reset its
    TF32 setting, which warns on machines without an Intel GPU.
    """
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous
