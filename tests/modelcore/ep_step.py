"""For test_expert_parallel.py, under ``step_worker.py``: one step of an EP model against the plain one.

Per case, every rank builds the same MoE model (same seed); one copy stays whole, the other
is split with ``apply_ep``. Both take the same batch; each rank reports, per parameter it
holds, the largest difference between its gradient and the plain model's; every rank
returns them all, with the losses, the logits' difference and the per-expert load of both.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from distributed import grad_diffs

from modelcore.config import ModelConfig
from modelcore.model import Transformer
from modelcore.parallelize import apply_ep, build_mesh


def one_step(model_cfg: dict[str, Any]) -> dict[str, Any]:
    cfg = ModelConfig(**model_cfg)
    torch.manual_seed(0)
    plain = Transformer(cfg)
    split = Transformer(cfg)
    split.load_state_dict(plain.state_dict())
    world = dist.get_world_size()
    apply_ep(split, build_mesh("cpu", world, 1, world)["ep"])
    ids = torch.randint(0, cfg.vocab_size, (3, 17), generator=torch.Generator().manual_seed(1))
    results = []
    for model in (plain, split):
        result = model(ids[:, :-1], ids[:, 1:])
        result.loss.backward()
        results.append(result)
    every: list[dict[str, float]] = [{} for _ in range(world)]
    dist.all_gather_object(every, grad_diffs(plain, split))
    with torch.no_grad():
        logits_diff = (split(ids) - plain(ids)).abs().max().item()
    return {
        "losses": [r.loss.item() for r in results],
        "load": [r.expert_load.tolist() for r in results],
        "grad_diffs": every,
        "logits_diff": logits_diff,
    }
