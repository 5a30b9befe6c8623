"""Triton kernels for RMSNorm, SwiGLU, rotary embedding and one chunk of cross-entropy.

Imported only when ``backend="triton"`` is used on CUDA tensors (or under
``TRITON_INTERPRET=1``), so ``import modelcore.kernels`` never needs triton.

Why hand-written rather than liger-kernel (0.8.5 is installed and was tried):
- RMSNorm and SwiGLU: Liger's kernels fail under TRITON_INTERPRET=1 (they call ``.to()``
  on a Python float argument, and ``libdevice.rsqrt`` is empty in the interpreter), and
  the interpreter is the only way this project's CPU test suite can run a Triton kernel.
  Ours use the float directly and ``1 / tl.sqrt``.
- RoPE: Liger's works in the interpreter but expects (B, H, T, D) tensors and duplicated
  (T, D) cos/sin, rotating in place; our model keeps (B, T, H, D) and (T, D/2) tables, so
  using it would cost a transpose copy of q and k and a concat of the tables every call.
- Cross-entropy chunk: the chunking and matmuls live in ``chunked_ce`` for every backend;
  only the per-chunk softmax + gradient is a kernel, and Liger's equivalent is an internal
  function whose argument list changes between releases (label smoothing, softcap, z-loss
  ...). A 40-line kernel of our own is the smaller dependency.
All four are checked against the plain-PyTorch references in tests/modelcore/kernels/.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# --------------------------------------------------------------------------- RMSNorm


@triton.jit
def _rms_norm_fwd_kernel(x_ptr, w_ptr, out_ptr, rstd_ptr, n_cols, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # row * n_cols can pass 2**31 on large batches
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    # 1 / sqrt rather than rsqrt: libdevice.rsqrt has no interpreter implementation.
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / n_cols + eps)
    tl.store(rstd_ptr + row, rstd)
    tl.store(out_ptr + row * n_cols + cols, (x * rstd * w).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _rms_norm_bwd_kernel(
    dy_ptr,
    x_ptr,
    w_ptr,
    rstd_ptr,
    dx_ptr,
    dw_partial_ptr,
    n_rows,
    n_cols,
    rows_per_program,
    BLOCK: tl.constexpr,
):
    # Each program owns a contiguous band of rows and writes one partial d(weight) row;
    # the partials are summed on the host side (a few hundred rows at most).
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    row_start = pid.to(tl.int64) * rows_per_program
    for i in range(0, rows_per_program):
        row = row_start + i
        if row < n_rows:
            x = tl.load(x_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
            dy = tl.load(dy_ptr + row * n_cols + cols, mask=mask, other=0.0).to(tl.float32)
            rstd = tl.load(rstd_ptr + row)
            x_hat = x * rstd
            wdy = w * dy
            # d/dx of x * rstd(x): rstd * (g - x_hat * mean(x_hat * g)), with g = w * dy.
            dx = rstd * (wdy - x_hat * (tl.sum(x_hat * wdy, axis=0) / n_cols))
            tl.store(dx_ptr + row * n_cols + cols, dx.to(dx_ptr.dtype.element_ty), mask=mask)
            dw += dy * x_hat
    tl.store(dw_partial_ptr + pid * n_cols + cols, dw, mask=mask)


def _n_programs(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count * 4
    return 4  # interpreter: few programs keep it quick


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, weight: torch.Tensor, eps: float):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1]).contiguous()
        n_rows, n_cols = x2.shape
        out = torch.empty_like(x2)
        rstd = torch.empty(n_rows, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(n_cols)
        _rms_norm_fwd_kernel[(n_rows,)](x2, weight.contiguous(), out, rstd, n_cols, eps, BLOCK=block)
        ctx.save_for_backward(x2, weight, rstd)
        return out.reshape(shape)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor):
        x2, weight, rstd = ctx.saved_tensors
        n_rows, n_cols = x2.shape
        dy2 = dy.reshape(-1, n_cols).contiguous()
        dx = torch.empty_like(x2)
        n_prog = max(1, min(n_rows, _n_programs(x2.device)))
        rows_per_program = -(-n_rows // n_prog)
        dw_partial = torch.empty((n_prog, n_cols), dtype=torch.float32, device=x2.device)
        block = triton.next_power_of_2(n_cols)
        _rms_norm_bwd_kernel[(n_prog,)](
            dy2, x2, weight.contiguous(), rstd, dx, dw_partial, n_rows, n_cols, rows_per_program, BLOCK=block
        )
        return dx.reshape(dy.shape), dw_partial.sum(0).to(weight.dtype), None


# --------------------------------------------------------------------------- SwiGLU


@triton.jit
def _swiglu_fwd_kernel(g_ptr, u_ptr, out_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig = 1.0 / (1.0 + tl.exp(-g))
    tl.store(out_ptr + offs, (g * sig * u).to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _swiglu_bwd_kernel(dy_ptr, g_ptr, u_ptr, dg_ptr, du_ptr, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < n
    dy = tl.load(dy_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(u_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    sig = 1.0 / (1.0 + tl.exp(-g))
    silu = g * sig
    # silu'(g) = sig * (1 + g * (1 - sig))
    tl.store(dg_ptr + offs, (dy * u * sig * (1.0 + g * (1.0 - sig))).to(dg_ptr.dtype.element_ty), mask=mask)
    tl.store(du_ptr + offs, (dy * silu).to(du_ptr.dtype.element_ty), mask=mask)


_ELEMENTWISE_BLOCK = 1024


class SwiGLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, gate: torch.Tensor, up: torch.Tensor):
        if gate.shape != up.shape:
            raise ValueError(f"gate {tuple(gate.shape)} and up {tuple(up.shape)} must have the same shape")
        g, u = gate.contiguous(), up.contiguous()
        out = torch.empty_like(g)
        n = g.numel()
        _swiglu_fwd_kernel[(triton.cdiv(n, _ELEMENTWISE_BLOCK),)](g, u, out, n, BLOCK=_ELEMENTWISE_BLOCK)
        ctx.save_for_backward(g, u)
        return out

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dy: torch.Tensor):
        g, u = ctx.saved_tensors
        dy = dy.contiguous()
        dg, du = torch.empty_like(g), torch.empty_like(u)
        n = g.numel()
        _swiglu_bwd_kernel[(triton.cdiv(n, _ELEMENTWISE_BLOCK),)](
            dy, g, u, dg, du, n, BLOCK=_ELEMENTWISE_BLOCK
        )
        return dg, du


# --------------------------------------------------------------------------- rotary embedding


@triton.jit
def _rotary_kernel(
    x_ptr,
    out_ptr,
    cos_ptr,
    sin_ptr,
    seq_len,
    n_heads,
    half,
    stride_b,
    stride_t,
    stride_h,
    sign,
    BLOCK_H: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    # One program per (batch, position): all heads of that token share one cos/sin row.
    # ``sign`` = -1 rotates backwards, which is the gradient of the forward rotation.
    pid = tl.program_id(0).to(tl.int64)
    b = pid // seq_len
    t = pid % seq_len
    heads = tl.arange(0, BLOCK_H)[:, None]
    dims = tl.arange(0, BLOCK_D)[None, :]
    mask = (heads < n_heads) & (dims < half)
    c = tl.load(cos_ptr + t * half + dims, mask=dims < half, other=0.0).to(tl.float32)
    s = tl.load(sin_ptr + t * half + dims, mask=dims < half, other=0.0).to(tl.float32) * sign
    src = x_ptr + b * stride_b + t * stride_t + heads * stride_h + dims
    x1 = tl.load(src, mask=mask, other=0.0).to(tl.float32)
    x2 = tl.load(src + half, mask=mask, other=0.0).to(tl.float32)
    # out is contiguous (B, T, H, D)
    dst = out_ptr + ((b * seq_len + t) * n_heads + heads) * (2 * half) + dims
    tl.store(dst, (x1 * c - x2 * s).to(out_ptr.dtype.element_ty), mask=mask)
    tl.store(dst + half, (x2 * c + x1 * s).to(out_ptr.dtype.element_ty), mask=mask)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, sign: float) -> torch.Tensor:
    if x.stride(-1) != 1:
        x = x.contiguous()
    bsz, seq_len, n_heads, head_dim = x.shape
    half = head_dim // 2
    if cos.shape != (seq_len, half) or sin.shape != (seq_len, half):
        raise ValueError(
            f"cos/sin must be ({seq_len}, {half}), got {tuple(cos.shape)} and {tuple(sin.shape)}"
        )
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    _rotary_kernel[(bsz * seq_len,)](
        x,
        out,
        cos.contiguous(),
        sin.contiguous(),
        seq_len,
        n_heads,
        half,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        sign,
        BLOCK_H=triton.next_power_of_2(n_heads),
        BLOCK_D=triton.next_power_of_2(half),
    )
    return out


class RotaryFunction(torch.autograd.Function):
    # cos/sin are fixed tables (buffers), so they get no gradient.
    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        q: torch.Tensor,
        k: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
    ):
        ctx.save_for_backward(cos, sin)
        return _rotate(q, cos, sin, 1.0), _rotate(k, cos, sin, 1.0)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, dq: torch.Tensor, dk: torch.Tensor):
        cos, sin = ctx.saved_tensors
        return _rotate(dq, cos, sin, -1.0), _rotate(dk, cos, sin, -1.0), None, None


# --------------------------------------------------------------------------- cross-entropy chunk


@triton.jit
def _cross_entropy_chunk_kernel(
    logits_ptr, targets_ptr, loss_ptr, n_cols, ignore_index, scale_ptr, BLOCK: tl.constexpr
):
    # One program per row. Pass 1: online max / sum-exp for the log-sum-exp. Pass 2:
    # overwrite the row with scale * (softmax - one_hot(target)), so the chunk needs no
    # second (rows, V) buffer.
    row = tl.program_id(0).to(tl.int64)
    row_ptr = logits_ptr + row * n_cols
    target = tl.load(targets_ptr + row)
    if target == ignore_index:
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            tl.store(
                row_ptr + cols,
                tl.zeros((BLOCK,), dtype=tl.float32).to(logits_ptr.dtype.element_ty),
                mask=cols < n_cols,
            )
        tl.store(loss_ptr + row, 0.0)
    else:
        m = -float("inf")
        d = 0.0
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            x = tl.load(row_ptr + cols, mask=cols < n_cols, other=-float("inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(x, axis=0))
            d = d * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), axis=0)
            m = m_new
        lse = m + tl.log(d)
        # Read from memory, not passed by value: the scale is a device tensor so that the
        # caller never syncs with the host to compute it.
        scale = tl.load(scale_ptr)
        target_logit = tl.load(row_ptr + target).to(tl.float32)
        tl.store(loss_ptr + row, lse - target_logit)
        for start in range(0, n_cols, BLOCK):
            cols = start + tl.arange(0, BLOCK)
            mask = cols < n_cols
            x = tl.load(row_ptr + cols, mask=mask, other=0.0).to(tl.float32)
            grad = tl.exp(x - lse) - tl.where(cols == target, 1.0, 0.0)
            tl.store(row_ptr + cols, (grad * scale).to(logits_ptr.dtype.element_ty), mask=mask)


def cross_entropy_chunk_triton(
    logits: torch.Tensor, targets: torch.Tensor, ignore_index: int, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``chunked_ce.ChunkLossFn`` as a Triton kernel; the gradient overwrites ``logits``."""
    logits = logits.contiguous()
    n_rows, n_cols = logits.shape
    losses = torch.empty(n_rows, dtype=torch.float32, device=logits.device)
    block = min(triton.next_power_of_2(n_cols), 4096 if logits.is_cuda else 1024)
    _cross_entropy_chunk_kernel[(n_rows,)](
        logits, targets.contiguous(), losses, n_cols, ignore_index, scale, BLOCK=block
    )
    return losses.sum(), logits
