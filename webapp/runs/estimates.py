"""Size and cost of a config, shown next to the new-run form while it is edited."""

from __future__ import annotations

from typing import Any

from modelcore.config import RunConfig


def estimate(config: RunConfig) -> dict[str, Any]:
    m = config.model
    seq_len = config.data.seq_len
    tokens_per_step = config.tokens_per_step()
    flops_per_token = m.flops_per_token(seq_len)
    return {
        "num_params": m.num_params(),
        "num_active_params": m.num_active_params(),
        "flops_per_token": flops_per_token,
        "tokens_per_step": tokens_per_step,
        "total_tokens": tokens_per_step * config.train.max_steps,
        "total_flops": flops_per_token * tokens_per_step * config.train.max_steps,
        "display": {
            "num_params": human_count(m.num_params()),
            "num_active_params": human_count(m.num_active_params()),
            "flops_per_token": human_count(flops_per_token) + "FLOP",
            "tokens_per_step": human_count(tokens_per_step),
            "total_flops": human_count(flops_per_token * tokens_per_step * config.train.max_steps) + "FLOP",
        },
    }


def human_count(n: float) -> str:
    """1234567 -> '1.23 M'; keeps three significant digits, which is what a reader compares."""
    for unit, size in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.3g} "
