"""For test_tensor_parallel.py, under ``step_worker.py``: one step of a TP model against the plain one.

Per case, every rank builds the same model (same seed); one copy stays whole, the other is
split with ``apply_tp``. Both take the same batch; the result holds the losses, per
parameter the largest difference between the full (gathered) TP gradient and the plain
one, and what the split model says to a call it cannot serve.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from distributed import grad_diffs

from modelcore.config import ModelConfig
from modelcore.model import Transformer
from modelcore.parallelize import apply_tp, build_mesh


def one_step(model_cfg: dict[str, Any], sequence_parallel: bool) -> dict[str, Any]:
    cfg = ModelConfig(**model_cfg)
    torch.manual_seed(0)
    plain = Transformer(cfg)
    split = Transformer(cfg)
    split.load_state_dict(plain.state_dict())
    mesh = build_mesh("cpu", dist.get_world_size(), dist.get_world_size())
    apply_tp(split, mesh["tp"], sequence_parallel)
    ids = torch.randint(0, cfg.vocab_size, (2, 17), generator=torch.Generator().manual_seed(1))
    losses = []
    for model in (plain, split):
        loss = model(ids[:, :-1], ids[:, 1:]).loss
        loss.backward()
        losses.append(loss.item())
    errors = []
    for call in (lambda: split(ids), lambda: split(ids[:, :-2], ids[:, 1:-1])):
        try:
            call()
            errors.append("")
        except (RuntimeError, ValueError) as exc:
            errors.append(str(exc))
    return {"losses": losses, "grad_diffs": grad_diffs(plain, split), "errors": errors}
