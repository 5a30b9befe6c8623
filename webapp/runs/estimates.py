"""Size and cost of a config, shown next to the new-run form while it is edited."""

from __future__ import annotations

from typing import Any

from modelcore.config import RunConfig


def estimate(config: RunConfig) -> dict[str, Any]:
    m = config.model
    seq_len = config.data.seq_len
    tokens_per_step = config.tokens_per_step()
    flops_per_token = m.flops_per_token(seq_len)
    memory = memory_per_gpu(config)
    return {
        "num_params": m.num_params(),
        "num_active_params": m.num_active_params(),
        "flops_per_token": flops_per_token,
        "tokens_per_step": tokens_per_step,
        "total_tokens": tokens_per_step * config.train.max_steps,
        "total_flops": flops_per_token * tokens_per_step * config.train.max_steps,
        "mesh": mesh(config),
        "memory_per_gpu": memory,
        "display": {
            "mesh": describe_mesh(config),
            **describe_memory(config, memory),
            "num_params": human_count(m.num_params()),
            "num_active_params": human_count(m.num_active_params()),
            "flops_per_token": human_count(flops_per_token) + "FLOP",
            "tokens_per_step": human_count(tokens_per_step),
            "total_flops": human_count(flops_per_token * tokens_per_step * config.train.max_steps) + "FLOP",
        },
    }


def mesh(config: RunConfig) -> dict[str, Any]:
    """How the processes split the work: data-parallel groups of tensor- (or expert-) parallel ranks."""
    p = config.parallel
    return {
        "data_parallel": p.data_parallel,
        "tensor_parallel": p.tensor_parallel,
        "expert_parallel": p.expert_parallel,
        "sequence_parallel": p.tensor_parallel > 1 and p.sequence_parallel,
        "strategy": p.strategy if p.data_parallel > 1 else "single",
    }


def describe_mesh(config: RunConfig) -> str:
    """``2 DP (FSDP) × 2 TP + SP``: data-parallel groups, then the tensor-parallel degree
    (``1 DP × 2 EP`` for expert parallel)."""
    m = mesh(config)
    data = f"{m['data_parallel']} DP" + (f" ({m['strategy'].upper()})" if m["data_parallel"] > 1 else "")
    if m["expert_parallel"] > 1:
        return f"{data} × {m['expert_parallel']} EP"
    if m["tensor_parallel"] == 1:
        return data
    return f"{data} × {m['tensor_parallel']} TP" + (" + SP" if m["sequence_parallel"] else "")


def memory_per_gpu(config: RunConfig) -> dict[str, int]:
    """Bytes one process holds at its peak, by kind; activations with and without checkpointing.

    Weights, gradients and AdamW's two moments are fp32 (mixed precision keeps fp32 master
    weights), split by tensor parallel and, under FSDP, by data parallel. Activations follow
    Korthikanti et al. 2022 (Megatron's count) per micro-batch: ``s*b*h*(34 + 5*a*s/h)`` bytes
    per layer at 16 bits, of which tensor parallel splits the attention and MLP part
    (``24 + 5*a*s/h``) and sequence parallel the rest; with checkpointing only each block's
    input is kept (``2*s*b*h``, split by sequence parallel) plus one block recomputed.
    Norm gains are counted as split too (they are a rounding error); the fused loss keeps no logits.
    Expert parallel splits the experts' weights only (with FSDP beside it, all weights are
    split over every process); its activations are counted as one
    process's (the EP group runs the same batch; the experts' share is not taken off).
    """
    m, p, t = config.model, config.parallel, config.train
    tp = p.tensor_parallel
    shards = tp * (p.data_parallel if p.strategy == "fsdp" else 1)
    experts = m.n_layers * m.n_experts * 3 * m.d_model * m.ffn_hidden
    params = (m.num_params() - experts * (1 - 1 / p.expert_parallel)) / shards
    if p.strategy == "fsdp" and p.expert_parallel > 1 and p.data_parallel > 1:
        # FSDP beside EP shards the rest over every process, each expert over data parallel.
        params = m.num_params() / (p.data_parallel * p.expert_parallel)
    s, b, h, a = config.data.seq_len, t.micro_batch_size, m.d_model, m.n_heads
    scale = 1.0 if p.mixed_precision in ("bf16", "fp16") else 2.0  # fp32 activations take twice the bytes
    sp = tp if tp > 1 and p.sequence_parallel else 1
    per_layer = s * b * h * (10 / sp + (24 + 5 * a * s / h) / tp) * scale
    kept_per_layer = 2 * s * b * h / sp * scale
    return {
        "weights": round(4 * params),
        "gradients": round(4 * params),
        "optimizer": round(8 * params),
        "activations": round(m.n_layers * per_layer),
        "activations_checkpointed": round(m.n_layers * kept_per_layer + per_layer),
    }


def describe_memory(config: RunConfig, parts: dict[str, int]) -> dict[str, str]:
    """The form's three lines: the total for the config as set, the model state, the activations."""
    state = parts["weights"] + parts["gradients"] + parts["optimizer"]
    checkpointing = config.parallel.activation_checkpointing
    activations = parts["activations_checkpointed" if checkpointing else "activations"]
    return {
        "memory_per_gpu": human_bytes(state + activations),
        "memory_state": human_bytes(state),
        "memory_activations": f"{human_bytes(parts['activations'])}; "
        f"{human_bytes(parts['activations_checkpointed'])} with checkpointing",
    }


def human_bytes(n: float) -> str:
    """Bytes in binary units, three significant digits: 1536 -> '1.5 KiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def human_count(n: float) -> str:
    """1234567 -> '1.23 M'; keeps three significant digits, which is what a reader compares."""
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.3g} "
