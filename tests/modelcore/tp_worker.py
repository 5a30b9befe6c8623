"""Run by ``torchrun`` from test_tensor_parallel.py: one step of a TP model against the plain one.

Every rank builds the same model (same seed); one copy stays whole, the other is split
with ``apply_tp``. Both take the same batch; rank 0 writes the loss and, per parameter,
the largest difference between the full (gathered) TP gradient and the plain one.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

from modelcore.config import ModelConfig
from modelcore.model import Transformer
from modelcore.parallelize import apply_tp, build_mesh


def main() -> None:
    model_cfg, sequence_parallel, out = json.loads(sys.argv[1]), sys.argv[2] == "sp", sys.argv[3]
    dist.init_process_group("gloo")
    try:
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
        diffs = {}
        for (name, a), b in zip(plain.named_parameters(), split.parameters(), strict=True):
            grad = b.grad.full_tensor() if isinstance(b.grad, DTensor) else b.grad
            diffs[name] = (grad - a.grad).abs().max().item()
        errors = []
        for call in (lambda: split(ids), lambda: split(ids[:, :-2], ids[:, 1:-1])):
            try:
                call()
                errors.append("")
            except (RuntimeError, ValueError) as exc:
                errors.append(str(exc))
        if dist.get_rank() == 0:
            with open(out, "w") as f:
                json.dump({"losses": losses, "grad_diffs": diffs, "errors": errors}, f)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
