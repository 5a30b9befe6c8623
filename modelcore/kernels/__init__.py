"""One function per fused op; the model calls these and nothing lower.

Each op takes ``backend=`` "torch" (plain PyTorch), "compile" (torch.compile)
or "triton" (fused GPU kernels). The plain references sit beside them as
``*_reference`` so tests can compare the two on forward and backward.

- ``chunked_ce``: the fused linear + cross-entropy (chunked, gradient in the same pass).
- ``cpu_gemm``: ``linear``, the model's matrix multiplies: float32 on x86 CPUs takes oneDNN
  or torch's BLAS per shape, whichever ``matmul_routes`` measured faster, whatever the backend.
- ``compiled``: the ``compile`` backend (cached torch.compile of each op).
- ``triton_ops``: the Triton kernels, imported only when a Triton path actually runs;
  ``import modelcore.kernels`` does not need triton or a GPU.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from modelcore.kernels.chunked_ce import chunked_linear_cross_entropy, cross_entropy_chunk_torch
from modelcore.kernels.compiled import compiled
from modelcore.kernels.cpu_gemm import linear

__all__ = [
    "BACKENDS",
    "apply_rotary",
    "apply_rotary_reference",
    "fused_linear_cross_entropy",
    "linear",
    "linear_cross_entropy_reference",
    "rms_norm",
    "rms_norm_reference",
    "swiglu",
    "swiglu_reference",
]

BACKENDS = ("torch", "compile", "triton")


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalise in float32 (as Llama does) and cast back to the input's dtype.
    x32 = x.float()
    out = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.float()).to(x.dtype)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def apply_rotary_reference(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k, shaped (B, T, H, D), by cos/sin shaped (T, D/2), half-split layout."""

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.float().chunk(2, dim=-1)
        c, s = cos[None, :, None, :].float(), sin[None, :, None, :].float()
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


def linear_cross_entropy_reference(
    hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100
) -> torch.Tensor:
    logits = hidden.reshape(-1, hidden.shape[-1]) @ weight.t()
    return F.cross_entropy(logits.float(), targets.reshape(-1), ignore_index=ignore_index)


def _use_triton(*tensors: torch.Tensor) -> bool:
    """Whether ``backend="triton"`` can run on these tensors; otherwise the torch path runs.

    Triton launches need a CUDA device, or the interpreter (``TRITON_INTERPRET=1``, set
    before Python starts, which is how the CPU test suite exercises the kernels). A run
    configured with ``kernels=triton`` on a CPU-only machine therefore still trains, on
    the plain PyTorch path, instead of failing at the first launch.
    """
    if all(t.is_cuda for t in tensors):
        return True
    return os.environ.get("TRITON_INTERPRET") == "1"


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"kernel backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, backend: str = "torch") -> torch.Tensor:
    """``x / rms(x) * weight`` over the last dimension, computed in float32."""
    _check_backend(backend)
    if backend == "triton" and _use_triton(x, weight):
        from modelcore.kernels.triton_ops import RMSNormFunction

        return RMSNormFunction.apply(x, weight, eps)
    if backend == "compile":
        return compiled("rms_norm")(x, weight, eps)
    return rms_norm_reference(x, weight, eps)


def swiglu(gate: torch.Tensor, up: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    """``silu(gate) * up``, the SwiGLU activation of a Llama MLP."""
    _check_backend(backend)
    if backend == "triton" and _use_triton(gate, up):
        from modelcore.kernels.triton_ops import SwiGLUFunction

        return SwiGLUFunction.apply(gate, up)
    if backend == "compile":
        return compiled("swiglu")(gate, up)
    return swiglu_reference(gate, up)


def apply_rotary(
    q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, backend: str = "torch"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotary embedding of q (B, T, H, D) and k (B, T, K, D) by cos/sin (T, D/2), half-split layout.

    cos and sin are fixed tables: the Triton path gives them no gradient.
    """
    _check_backend(backend)
    if backend == "triton" and _use_triton(q, k, cos, sin):
        from modelcore.kernels.triton_ops import RotaryFunction

        return RotaryFunction.apply(q, k, cos, sin)
    if backend == "compile":
        return compiled("apply_rotary")(q, k, cos, sin)
    return apply_rotary_reference(q, k, cos, sin)


def fused_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    backend: str = "torch",
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` (hidden (..., H), weight (V, H)) against targets.

    Never materialises the (tokens, V) logits, whatever the backend: tokens are processed
    in chunks of ``chunk_rows`` (default: about as many logits as hidden values) and the
    gradients are computed in the same pass. The backend picks how one chunk's softmax and
    gradient are computed.
    """
    _check_backend(backend)
    if backend == "triton" and _use_triton(hidden, weight):
        from modelcore.kernels.triton_ops import cross_entropy_chunk_triton

        chunk_fn = cross_entropy_chunk_triton
    elif backend == "compile":
        chunk_fn = compiled("cross_entropy_chunk")
    else:
        chunk_fn = cross_entropy_chunk_torch
    return chunked_linear_cross_entropy(hidden, weight, targets, ignore_index, chunk_fn, chunk_rows)
