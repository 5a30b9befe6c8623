"""Fused linear + cross-entropy that never holds the full (tokens x vocab) logits.

The idea is Liger's FusedLinearCrossEntropy and Apple's "Cut Your Losses" (cut
cross-entropy): the logits of a language-model head are by far the largest tensor
of a step (8k tokens x 32k vocab in float32 is 1 GiB, and autograd keeps several
copies of that size). We walk over the tokens in chunks, and for each chunk compute
its logits, its share of the loss, and at once the gradient of the loss with respect
to the logits; that gradient is pushed through the matmul straight away into
d(hidden) and d(weight), and the chunk's logits are freed. Backward then only
scales the gradients it was handed by the incoming grad_output.

How one chunk's softmax + gradient is computed is pluggable (``ChunkLossFn``): plain
PyTorch, the same function under torch.compile, or a Triton kernel. The chunking,
the matmuls and the float32 accumulation live here once.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from modelcore.kernels.cpu_gemm import mm_nt, use_onednn

# (logits (C, V), targets (C,), ignore_index, scale) -> (sum of the chunk's losses as a float32
# scalar, d(loss)/d(logits) (C, V) in the dtype of ``logits``, already multiplied by ``scale``, a
# float32 0-d tensor on the logits' device). It may overwrite ``logits`` (the Triton kernel writes
# the gradient in its place).
ChunkLossFn = Callable[[torch.Tensor, torch.Tensor, int, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def cross_entropy_chunk_torch(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Loss sum and scaled d(loss)/d(logits) of one chunk, computed in float32."""
    x = logits.float()
    valid = targets != ignore_index
    safe_targets = torch.where(valid, targets, torch.zeros_like(targets)).unsqueeze(1)  # (C, 1)
    lse = torch.logsumexp(x, dim=-1, keepdim=True)  # (C, 1)
    target_logit = x.gather(1, safe_targets)  # (C, 1)
    loss_sum = ((lse - target_logit).squeeze(1) * valid).sum()
    # softmax - one_hot(target), zero on ignored rows; in place to keep one (C, V) buffer.
    grad = (x - lse).exp_()
    grad.scatter_add_(1, safe_targets, torch.full_like(target_logit, -1.0))
    grad.mul_((valid.to(grad.dtype) * scale).unsqueeze(1))
    return loss_sum, grad.to(logits.dtype)


def _mean_divisor(targets: torch.Tensor, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(number of counted targets, its float32 reciprocal or 0 when there are none), as 0-d tensors.

    Both stay on the device: reading the count on the host would be a sync every step and a
    graph break when the model is compiled. The reciprocal is taken in float64 and rounded
    once, as the Python float it replaces was, so the gradients keep every bit.
    """
    n_valid = (targets != ignore_index).sum()
    scale = (n_valid > 0) / n_valid.clamp(min=1).to(torch.float64)
    return n_valid, scale.to(torch.float32)


def default_chunk_rows(n_rows: int, vocab: int, hidden: int) -> int:
    # As Liger does: make one chunk's logits about as large as the hidden states themselves
    # (rows * vocab ~ n_rows * hidden), so the loss never costs much more than its input.
    n_chunks = max(1, -(-vocab // hidden))
    rows = -(-n_rows // n_chunks)
    return max(1, 1 << (rows - 1).bit_length())


class _ChunkedLinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        hidden: torch.Tensor,
        weight: torch.Tensor,
        targets: torch.Tensor,
        ignore_index: int,
        chunk_fn: ChunkLossFn,
        chunk_rows: int,
        need_grad_hidden: bool,
        need_grad_weight: bool,
    ) -> torch.Tensor:
        n_rows = hidden.shape[0]
        # The mean's divisor is folded into each chunk's gradient.
        n_valid, scale = _mean_divisor(targets, ignore_index)

        grad_hidden = torch.empty_like(hidden) if need_grad_hidden else None
        # float32 accumulator: summing many low-precision partial products loses the small ones.
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_grad_weight else None
        )
        loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)

        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, n_rows, chunk_rows):
                end = min(start + chunk_rows, n_rows)
                h = hidden[start:end]  # (C, H)
                logits = mm_nt(h, weight)  # (C, V)
                chunk_loss, grad_logits = chunk_fn(logits, targets[start:end], ignore_index, scale)
                loss_sum += chunk_loss
                if grad_hidden is not None:
                    if use_onednn(grad_logits, weight.t()):
                        grad_hidden[start:end] = mm_nt(grad_logits, weight.t())  # (C, V) @ (V, H)
                    else:
                        torch.mm(grad_logits, weight, out=grad_hidden[start:end])
                if grad_weight is not None:
                    if use_onednn(grad_logits.t(), h.t()):
                        grad_weight += mm_nt(grad_logits.t(), h.t())  # (V, C) @ (C, H)
                    elif grad_logits.dtype == torch.float32:
                        grad_weight.addmm_(grad_logits.t(), h)
                    else:
                        grad_weight += grad_logits.t() @ h
                del logits, grad_logits

        ctx.save_for_backward(
            grad_hidden if grad_hidden is not None else torch.empty(0),
            grad_weight.to(weight.dtype) if grad_weight is not None else torch.empty(0),
        )
        ctx.has_grads = (grad_hidden is not None, grad_weight is not None)
        # n_valid == 0 gives 0 / 0 = nan, as F.cross_entropy's mean does.
        return loss_sum / n_valid

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_output: torch.Tensor) -> tuple:
        grad_hidden, grad_weight = ctx.saved_tensors
        has_hidden, has_weight = ctx.has_grads
        # Always scaled: skipping the product when grad_output is 1 would need a host sync
        # (a graph break under torch.compile), and x * 1 is exact anyway.
        if has_hidden:
            grad_hidden = grad_hidden * grad_output.to(grad_hidden.dtype)
        if has_weight:
            grad_weight = grad_weight * grad_output.to(grad_weight.dtype)
        return (
            grad_hidden if has_hidden else None,
            grad_weight if has_weight else None,
            None,
            None,
            None,
            None,
            None,
            None,
        )


def chunked_linear_cross_entropy(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int = -100,
    chunk_fn: ChunkLossFn = cross_entropy_chunk_torch,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Mean cross-entropy of ``hidden @ weight.T`` against ``targets``, chunk by chunk.

    hidden: (..., H); weight: (V, H); targets: (...) with ``ignore_index`` for positions
    that do not count. Equals ``F.cross_entropy(hidden @ weight.T, targets)`` (mean over
    the non-ignored targets), but the largest temporary is (chunk_rows, V).
    """
    if hidden.shape[-1] != weight.shape[1]:
        raise ValueError(f"hidden size {hidden.shape[-1]} does not match weight {tuple(weight.shape)}")
    h2 = hidden.reshape(-1, hidden.shape[-1])
    t1 = targets.reshape(-1)
    if h2.shape[0] != t1.shape[0]:
        raise ValueError(f"{h2.shape[0]} hidden rows but {t1.shape[0]} targets")
    if chunk_rows is None:
        chunk_rows = default_chunk_rows(h2.shape[0], weight.shape[0], weight.shape[1])
    device_type = h2.device.type
    if torch.is_autocast_enabled(device_type):
        # Cast as autocast would for the lm-head matmul, then run the chunks with autocast off
        # so every dtype below is the one chosen here (float32 accumulators stay float32).
        dtype = torch.get_autocast_dtype(device_type)
        h2, weight = h2.to(dtype), weight.to(dtype)
    grad_on = torch.is_grad_enabled()
    need_h = grad_on and hidden.requires_grad
    need_w = grad_on and weight.requires_grad
    if not (need_h or need_w):
        return _loss_only(h2, weight, t1, ignore_index, chunk_fn, chunk_rows)
    # Mixed dtypes (autocast off, fp32 master weight with bf16 activations) are the caller's
    # choice to resolve; mm needs them equal.
    w = weight if weight.dtype == h2.dtype else weight.to(h2.dtype)
    return _ChunkedLinearCrossEntropy.apply(
        h2.contiguous(), w, t1, ignore_index, chunk_fn, chunk_rows, need_h, need_w
    )


def _loss_only(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    ignore_index: int,
    chunk_fn: ChunkLossFn,
    chunk_rows: int,
) -> torch.Tensor:
    # Evaluation path: same chunking, the gradient the chunk function returns is dropped.
    w = weight if weight.dtype == hidden.dtype else weight.to(hidden.dtype)
    n_valid = (targets != ignore_index).sum()
    no_grad_scale = torch.zeros((), dtype=torch.float32, device=hidden.device)
    loss_sum = torch.zeros((), dtype=torch.float32, device=hidden.device)
    with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, hidden.shape[0], chunk_rows):
            end = min(start + chunk_rows, hidden.shape[0])
            chunk_loss, _ = chunk_fn(
                mm_nt(hidden[start:end], w), targets[start:end], ignore_index, no_grad_scale
            )
            loss_sum += chunk_loss
    return loss_sum / n_valid  # nan when every target is ignored
