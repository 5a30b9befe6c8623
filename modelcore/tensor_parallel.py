"""Tensor-parallel pieces DTensor's parallel styles do not cover (Megatron's own operators).

- ``VocabParallelCrossEntropy``: the loss of a vocabulary-parallel output projection. Each
  rank holds rows ``[start, start + V/tp)`` of the (V, D) weight; the loss walks over the
  tokens in chunks, and per chunk computes only its own (C, V/tp) logits, then the global
  max, sum of exponentials and target logit with one all-reduce each. The full (N, V)
  logits exist nowhere, not even split: the chunking of ``kernels.chunked_ce`` is kept.
- ``copy_to_tp_region``: Megatron's ``f`` (identity forward, all-reduce backward), for a
  layer whose weight every rank holds whole but each rank uses a part of (key/value heads
  replicated because their count does not split over the TP degree).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh
from torch.distributed.tensor import DTensor, Replicate

from modelcore.kernels.chunked_ce import default_chunk_rows


class _CopyToTensorParallelRegion(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        grad = grad.contiguous()
        dist.all_reduce(grad, group=ctx.group)
        return grad, None


def copy_to_tp_region(x: torch.Tensor, group: dist.ProcessGroup) -> torch.Tensor:
    """Identity forward; the backward sums the gradient over the TP group."""
    return _CopyToTensorParallelRegion.apply(x, group)


class _VocabParallelLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        vocab_start: int,
        group: dist.ProcessGroup,
        chunk_rows: int,
        ignore_index: int,
    ) -> torch.Tensor:
        # hidden (N, D) whole on every rank; weight (V_local, D) this rank's vocabulary rows.
        # Logits in the inputs' dtype (bf16 under autocast, as the unsplit loss), softmax in fp32.
        with torch.autocast(hidden.device.type, enabled=False):
            return _VocabParallelLinearCrossEntropy._forward(
                ctx, hidden, weight, targets, vocab_start, group, chunk_rows, ignore_index
            )

    @staticmethod
    def _forward(
        ctx: Any,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        vocab_start: int,
        group: dist.ProcessGroup,
        chunk_rows: int,
        ignore_index: int,
    ) -> torch.Tensor:
        n_rows, v_local = hidden.shape[0], weight.shape[0]
        w32 = weight.float()
        valid = targets != ignore_index
        n_valid = valid.sum()
        scale = ((n_valid > 0) / n_valid.clamp(min=1).to(torch.float64)).to(torch.float32)
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_hidden = torch.zeros(hidden.shape, dtype=torch.float32, device=hidden.device)
        grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device)
        for start in range(0, n_rows, chunk_rows):
            h_in = hidden[start : start + chunk_rows]  # (C, D)
            h = h_in.float()
            t = targets[start : start + chunk_rows]
            ok = valid[start : start + chunk_rows]
            logits = (h_in @ weight.t()).float()  # (C, V_local)
            peak = logits.max(dim=-1).values  # (C,)
            dist.all_reduce(peak, op=dist.ReduceOp.MAX, group=group)
            local = t - vocab_start
            mine = (local >= 0) & (local < v_local) & ok
            safe = torch.where(mine, local, torch.zeros_like(local)).unsqueeze(1)  # (C, 1)
            target_logit = logits.gather(1, safe).squeeze(1) * mine  # (C,), zero off this rank
            exp = (logits - peak[:, None]).exp_()  # (C, V_local)
            sums = torch.stack([exp.sum(dim=-1), target_logit])  # (2, C): one all-reduce for both
            dist.all_reduce(sums, group=group)
            lse = peak + sums[0].log()  # (C,)
            loss_sum += ((lse - sums[1]) * ok).sum()
            # d(loss)/d(logits) = softmax - one_hot(target), on this rank's vocabulary slice.
            grad = exp.div_(sums[0][:, None])
            grad.scatter_add_(1, safe, -mine.to(grad.dtype).unsqueeze(1))
            grad.mul_((ok.to(grad.dtype) * scale).unsqueeze(1))
            grad_hidden[start : start + chunk_rows] = grad @ w32
            grad_weight += grad.t() @ h
        # Every rank's slice of the vocabulary contributes to d(hidden): sum them.
        dist.all_reduce(grad_hidden, group=group)
        ctx.save_for_backward(grad_hidden.to(hidden.dtype), grad_weight.to(weight.dtype))
        return loss_sum * scale

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        grad_hidden, grad_weight = ctx.saved_tensors
        return grad_hidden * grad_out, grad_weight * grad_out, None, None, None, None, None


class VocabParallelCrossEntropy:
    """Mean cross-entropy of ``hidden @ weight.T`` with ``weight`` sharded by rows over the TP mesh.

    Called as the model's ``cross_entropy`` (``kernels.fused_linear_cross_entropy``'s
    signature): ``hidden`` is a plain tensor whole on every rank or a DTensor (sequence
    parallel, sharded by position), ``weight`` a DTensor sharded on dimension 0.
    """

    def __init__(self, mesh: DeviceMesh):
        self.mesh = mesh
        self.group = mesh.get_group()
        self.rank, self.size = mesh.get_local_rank(), mesh.size()

    def __call__(
        self,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int = -100,
        backend: str = "torch",
        chunk_rows: int | None = None,
    ) -> torch.Tensor:
        if isinstance(hidden, DTensor):
            # Sequence parallel: gather the positions (the backward slices the summed gradient).
            hidden = hidden.redistribute(placements=[Replicate()]).to_local()
        vocab, width = weight.shape
        local_weight = weight.to_local() if isinstance(weight, DTensor) else weight
        # torch.chunk's split, which DTensor's Shard(0) uses: ceil(V / tp) rows per rank.
        vocab_start = self.rank * -(-vocab // self.size)
        flat = hidden.reshape(-1, width)
        rows = flat.shape[0]
        device_type = flat.device.type
        if torch.is_autocast_enabled(device_type):
            # Cast as autocast would for the lm-head matmul (the unsplit fused loss does the same).
            dtype = torch.get_autocast_dtype(device_type)
            flat, local_weight = flat.to(dtype), local_weight.to(dtype)
        chunk = chunk_rows or default_chunk_rows(rows, local_weight.shape[0], width)
        return _VocabParallelLinearCrossEntropy.apply(
            flat, local_weight, targets.reshape(-1), vocab_start, self.group, chunk, ignore_index
        )
