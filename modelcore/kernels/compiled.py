"""The ``compile`` backend: torch.compile of each op's plain-PyTorch form, compiled once.

The compiled callables are cached per op so every layer and every step reuses the same
compiled graph (torch.compile's own cache then handles new shapes and dtypes).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch


@functools.cache
def compiled(name: str) -> Callable:
    # Imported here, not at module top, to avoid a cycle with modelcore.kernels.
    from modelcore import kernels
    from modelcore.kernels.chunked_ce import cross_entropy_chunk_torch

    functions: dict[str, Callable] = {
        "rms_norm": kernels.rms_norm_reference,
        "swiglu": kernels.swiglu_reference,
        "apply_rotary": kernels.apply_rotary_reference,
        # Only the per-chunk softmax + gradient is compiled: the chunk loop must stay in
        # Python so the full logits never exist, and the two matmuls are single GEMMs already.
        "cross_entropy_chunk": cross_entropy_chunk_torch,
    }
    # dynamic=None: compile for the first shape, then once more as dynamic if shapes change
    # (the chunked loss's last chunk is usually shorter than the others).
    return torch.compile(functions[name], dynamic=None)
