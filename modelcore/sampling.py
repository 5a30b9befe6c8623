"""Samples during training: the model's continuations of ``train.sample_prompts`` every
``train.sample_every`` steps, so a team reads what the model writes as it learns.

Every rank generates (a sharded model's forward is a collective: FSDP gathers weights,
tensor parallelism gathers activations), with the same seed per step so all ranks pick the
same tokens; rank 0 writes the event. Generation reuses modelcore.generate.
"""

from __future__ import annotations

from typing import Any

import torch

from modelcore.config import TrainConfig, sample_prompts
from modelcore.generate import generate


def sample_due(step: int, t: TrainConfig) -> bool:
    """Whether ``step`` is a sample step: every ``t.sample_every`` steps and the last one."""
    return bool(t.sample_every) and (step % t.sample_every == 0 or step == t.max_steps)


def generate_samples(
    model: torch.nn.Module, tokenizer: Any, t: TrainConfig, step: int
) -> list[tuple[str, str]]:
    """``(prompt, continuation)`` for each prompt of ``t``, from the model's current weights."""
    out = []
    for i, prompt in enumerate(sample_prompts(t.sample_prompts)):
        text = generate(
            model,
            tokenizer,
            prompt,
            max_new_tokens=t.sample_max_tokens,
            temperature=t.sample_temperature,
            top_p=t.sample_top_p,
            seed=t.seed * 1_000_003 + step * 101 + i,  # the same on every rank, new each step
        )
        out.append((prompt, text))
    return out
