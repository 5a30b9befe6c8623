"""Checkpoints: ``RUN_DIR/checkpoints/step_XXXXXX/`` and ``load_checkpoint`` for tools.

One directory per checkpoint, as the trainer writes it::

    state/                model and AdamW state, sharded (torch.distributed.checkpoint):
      .metadata             every tensor's global shape and which file holds which chunk
      __{r}_0.distcp        what rank r holds: its TP / FSDP shards (DTensors), its experts
                            (EP, keyed by their global expert index), a share of the replicated
                            tensors (each is written once)
    trainer.pt            scheduler state and the step
    sampler.json          data sampler position
    rng_rank{r}.pt        Python, NumPy and torch RNG states of each rank
    config.json           the RunConfig that trained it
    meta.json             step, tokens seen, world size, "format": "dcp", time; written last
    tokenizer/            the run's tokenizer

Tensors are stored by their global names and shapes, so a checkpoint resumes under another
layout (TP=2 to one process and back, EP=2 to EP=1) and loads whole into one process
(``load_checkpoint``, export, ``train.init_from``).

Checkpoints from before the sharded format, and the weights-only ones of
``save_weights_checkpoint``, hold ``model.safetensors`` (a tied lm_head stored once, as
embed_tokens) and, for resuming, ``optimizer.pt`` (the full AdamW state) instead of
``state/``; everything here reads both.

Every rank writes into ``step_XXXXXX.tmp`` and rank 0 renames it once all are
done, so a directory without ``.tmp`` is always complete.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

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
    """The whole weights of a checkpoint folder, in either format, as plain CPU tensors."""
    state = read_sharded_model_state(path) if is_sharded(path) else load_file(str(path / "model.safetensors"))
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


# --- model and optimizer state through torch.distributed.checkpoint --------------

STATE_DIR = "state"


def is_sharded(path: Path) -> bool:
    """Whether the checkpoint folder holds the sharded ``state/`` (else ``model.safetensors``)."""
    return (Path(path) / STATE_DIR / ".metadata").is_file()


def _no_dist() -> bool:
    return not (dist.is_available() and dist.is_initialized())


@contextlib.contextmanager
def _single_process_quietly() -> Iterator[None]:
    # DCP warns on every save or load without a process group; one process is meant here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled", category=UserWarning)
        yield


def _model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    # What this rank holds, by global name: DTensors under TP and FSDP2 (DCP writes their
    # local shards and records where each sits), only its own experts under EP (RemoteExpert
    # places hold none), whole tensors otherwise. Each value shares its parameter's storage,
    # so a load writes straight into the model.
    state = dict(model.state_dict())
    if getattr(model, "config", None) is not None and model.config.tie_embeddings:
        state.pop("lm_head.weight", None)  # the same tensor as embed_tokens.weight
    return state


def _optimizer_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    # Keyed by parameter name, not position: positions differ between layouts (EP ranks hold
    # different experts). Each state tensor has its parameter's layout (DTensor or local).
    names = {id(p): name for name, p in model.named_parameters()}
    return {
        "state": {
            names[id(p)]: dict(optimizer.state[p])
            for group in optimizer.param_groups
            for p in group["params"]
            if p in optimizer.state
        },
        # The trainer builds the same groups in every layout; only their settings are kept.
        "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups],
    }


def _init_optimizer_state(optimizer: torch.optim.Optimizer) -> None:
    """Create AdamW's state tensors (with each parameter's layout) for DCP to load into: one
    step with zero gradients and a learning rate of 0, which changes no weight."""
    if optimizer.state:
        return
    lrs = [g["lr"] for g in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0
        for p in group["params"]:
            p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr


def save_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Write ``path/state/``: every rank calls it and writes its own file (a collective)."""
    state: dict[str, Any] = {"model": _model_state(model)}
    if optimizer is not None:
        optimizer = getattr(optimizer, "optimizer", optimizer)  # Accelerate's wrapper
        state["optimizer"] = _optimizer_state(model, optimizer)
    with _single_process_quietly():
        dcp.save(state, storage_writer=FileSystemWriter(Path(path) / STATE_DIR), no_dist=_no_dist())


def load_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None) -> None:
    """Load ``path/state/`` into this rank's part of ``model`` (and ``optimizer``), whatever
    layout saved it; every rank calls it."""
    saved = FileSystemReader(Path(path) / STATE_DIR).read_metadata().state_dict_metadata
    model_state = _model_state(model)
    missing = sorted(name for name in model_state if f"model.{name}" not in saved)
    if missing:
        raise ValueError(f"checkpoint {path} does not fit the model: missing {missing}")
    target: dict[str, Any] = {"model": model_state}
    if optimizer is not None:
        optimizer = getattr(optimizer, "optimizer", optimizer)
        _init_optimizer_state(optimizer)
        optim_state = _optimizer_state(model, optimizer)
        for name, entries in optim_state["state"].items():
            # A parameter without saved state (no gradient before the save) starts afresh.
            if not all(f"optimizer.state.{name}.{key}" in saved for key in entries):
                entries.clear()
        target["optimizer"] = optim_state
    with _single_process_quietly():
        dcp.load(target, storage_reader=FileSystemReader(Path(path) / STATE_DIR), no_dist=_no_dist())
    if optimizer is None:
        return
    params = dict(model.named_parameters())
    for name, entries in target["optimizer"]["state"].items():
        if not entries:
            optimizer.state.pop(params[name], None)
    groups = target["optimizer"]["param_groups"]
    if len(groups) != len(optimizer.param_groups):
        raise ValueError(
            f"the checkpoint's optimizer has {len(groups)} parameter groups, this one "
            f"{len(optimizer.param_groups)}"
        )
    for group, settings in zip(optimizer.param_groups, groups, strict=True):
        group.update(settings)


def read_sharded_model_state(path: Path) -> dict[str, torch.Tensor]:
    """The whole weights of a sharded checkpoint in this process (no process group needed)."""
    reader = FileSystemReader(Path(path) / STATE_DIR)
    state = {
        key.removeprefix("model."): torch.empty(meta.size, dtype=meta.properties.dtype)
        for key, meta in reader.read_metadata().state_dict_metadata.items()
        if key.startswith("model.") and isinstance(meta, TensorStorageMetadata)
    }
    with _single_process_quietly():
        dcp.load({"model": state}, storage_reader=FileSystemReader(Path(path) / STATE_DIR), no_dist=True)
    return state


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
    sharded: bool = False,
) -> Path:
    """A checkpoint with weights, config and tokenizer only (no optimizer): enough for
    ``load_checkpoint``, export and generation, not for resuming training. In
    ``model.safetensors``, or with ``sharded`` in ``state/`` as the trainer writes it."""
    from safetensors.torch import save_file

    path = Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step)
    path.mkdir(parents=True, exist_ok=True)
    if sharded:
        save_state(path, model)
    else:
        save_file(
            model_state_for_save(model.state_dict(), config.model.tie_embeddings),
            str(path / "model.safetensors"),
        )
    (path / "config.json").write_text(config.to_json())
    tokenizer.save(path / "tokenizer")
    meta = {"step": step, "tokens_seen": 0, "world_size": 1}
    write_json(path / "meta.json", {**meta, "format": "dcp"} if sharded else meta)
    return path
