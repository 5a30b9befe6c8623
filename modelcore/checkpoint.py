"""Checkpoints: ``RUN_DIR/checkpoints/step_XXXXXX/`` and ``load_checkpoint`` for tools.

One directory per checkpoint::

    model.safetensors     weights (a tied lm_head is stored once, as embed_tokens)
    optimizer.pt          AdamW state (DDP: from rank 0; FSDP: optimizer_rank{r}.pt per shard)
    trainer.pt            scheduler state and the step
    sampler.json          data sampler position
    rng_rank{r}.pt        Python, NumPy and torch RNG states of each rank
    config.json           the RunConfig that trained it
    meta.json             step, tokens seen, time; written last
    tokenizer/            the run's tokenizer

Every rank writes into ``step_XXXXXX.tmp`` and rank 0 renames it once all are
done, so a directory without ``.tmp`` is always complete.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file

# The layout is torch-free so the workers can list checkpoints; re-exported for tools.
from modelcore.checkpoint_layout import CHECKPOINTS_DIR, checkpoint_name, list_checkpoints
from modelcore.config import RunConfig
from modelcore.model import Transformer
from modelcore.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer


def model_state_for_save(state: dict[str, torch.Tensor], tied: bool) -> dict[str, torch.Tensor]:
    # safetensors refuses tensors that share memory; the tie is restored on load.
    out = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    if tied:
        out.pop("lm_head.weight", None)
    return out


def read_model_state(path: Path, tied: bool) -> dict[str, torch.Tensor]:
    state = load_file(str(path / "model.safetensors"))
    if tied:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    return state


def load_model_weights(model: Transformer, path: Path) -> None:
    state = read_model_state(path, model.config.tie_embeddings)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"checkpoint {path} does not fit the model: missing {missing}, unexpected {unexpected}"
        )


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def remove_incomplete(run_dir: Path) -> None:
    """Delete ``step_*.tmp`` folders that a crash or kill left half written."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    for path in root.glob("step_*.tmp") if root.is_dir() else []:
        shutil.rmtree(path, ignore_errors=True)


def prune_checkpoints(run_dir: Path, keep_last: int) -> list[int]:
    """Delete all but the ``keep_last`` newest complete checkpoints; returns the steps deleted.

    The worker's supervisor sees them gone from disk and drops them from the database, so
    the eval form stops offering them.
    """
    pruned = []
    for step, path in list_checkpoints(run_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)
        pruned.append(step)
    return pruned


def load_checkpoint(
    run_dir: str | Path, step: int | None = None, device: str | torch.device = "cpu"
) -> tuple[Transformer, RunConfig, ByteTokenizer | HFTokenizer]:
    """The model (eval mode, fp32), its RunConfig and tokenizer from a run's checkpoint.

    ``step=None`` takes the latest complete checkpoint.
    """
    checkpoints = dict(list_checkpoints(run_dir))
    if not checkpoints:
        raise FileNotFoundError(f"no checkpoints in {Path(run_dir) / CHECKPOINTS_DIR}")
    if step is None:
        step = max(checkpoints)
    if step not in checkpoints:
        raise FileNotFoundError(f"no checkpoint for step {step} in {run_dir}; have {sorted(checkpoints)}")
    path = checkpoints[step]
    config = RunConfig.from_dict(json.loads((path / "config.json").read_text()))
    model = Transformer(config.model)
    load_model_weights(model, path)
    model.to(device).eval()
    return model, config, load_tokenizer(path / "tokenizer")


def save_weights_checkpoint(
    run_dir: str | Path,
    step: int,
    model: Transformer,
    config: RunConfig,
    tokenizer: ByteTokenizer | HFTokenizer,
) -> Path:
    """A checkpoint with weights, config and tokenizer only (no optimizer): enough for
    ``load_checkpoint``, export and generation, not for resuming training."""
    from safetensors.torch import save_file

    path = Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step)
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        model_state_for_save(model.state_dict(), config.model.tie_embeddings), str(path / "model.safetensors")
    )
    (path / "config.json").write_text(config.to_json())
    tokenizer.save(path / "tokenizer")
    write_json(path / "meta.json", {"step": step, "tokens_seen": 0, "world_size": 1})
    return path
