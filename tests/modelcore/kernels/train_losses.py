"""Train a tiny model for a few AdamW steps with each kernels backend and print the losses as JSON.

Run by test_kernels_training.py as ``python train_losses.py --steps 30`` in a child process
with TRITON_INTERPRET=1, so the Triton backend runs its kernels on CPU tensors.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from modelcore.config import ModelConfig
from modelcore.model import build_model


def train_losses(backend: str, steps: int) -> list[float]:
    torch.manual_seed(0)
    cfg = ModelConfig(
        vocab_size=64, d_model=32, n_layers=2, n_heads=4, n_kv_heads=2, max_seq_len=16, kernels=backend
    )
    model = build_model(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    gen = torch.Generator().manual_seed(1)
    # Four fixed batches cycled, so the loss can fall within a few steps.
    batches = [torch.randint(0, cfg.vocab_size, (2, 9), generator=gen) for _ in range(4)]
    losses = []
    for step in range(steps):
        ids = batches[step % len(batches)]
        targets = ids[:, 1:].clone()
        targets[0, :2] = -100  # padding positions, as a packed batch may have
        out = model(ids[:, :-1], targets)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.ce_loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    result = {backend: train_losses(backend, args.steps) for backend in ("torch", "triton")}
    result["triton_kernels_loaded"] = "modelcore.kernels.triton_ops" in sys.modules
    print(json.dumps(result))


if __name__ == "__main__":
    main()
