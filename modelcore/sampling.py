"""Samples during training: the model's continuations of ``train.sample_prompts`` every
``train.sample_every`` steps, so a team reads what the model writes as it learns.

Every rank generates, with the same seed per step so all ranks pick the same tokens; rank 0
writes the event. An FSDP model generates as it is (its forward gathers the weights, a
collective); a tensor- or expert-parallel one is first gathered into a whole copy
(``whole_model``), since it gives no logits and its experts sit on other ranks.
Generation reuses modelcore.generate.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from modelcore.config import TrainConfig, sample_prompts
from modelcore.generate import generate
from modelcore.model import Transformer


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


@torch.no_grad()
def whole_model(model: Transformer, ep_group: dist.ProcessGroup | None = None) -> Transformer:
    """A plain model with the weights of a tensor- or expert-parallel one, to generate from.

    A split model gives no logits (the vocabulary-parallel loss never gathers them) and
    its experts sit on other ranks, so sampling gathers the whole weights instead: every
    rank of the model's mesh must call this (TP: one all-gather per DTensor; EP: each
    rank's experts to the group). Sampling is rare (``train.sample_every``), so holding a
    whole copy for its duration is the price of not generating through collectives.
    """
    state = {
        name: value.full_tensor() if isinstance(value, DTensor) else value
        for name, value in model.state_dict().items()
    }
    if ep_group is not None:
        # Each rank holds its own experts under their global names: collect the others'.
        parts: list[Any] = [None] * dist.get_world_size(ep_group)
        mine = {name: value.cpu() for name, value in state.items() if ".mlp.experts." in name}
        dist.all_gather_object(parts, mine, group=ep_group)
        device = next(iter(state.values())).device
        for part in parts:
            state.update({name: value.to(device) for name, value in part.items()})
    plain = Transformer(model.config).to(next(iter(state.values())).device)
    plain.load_state_dict(state)
    return plain.eval()
