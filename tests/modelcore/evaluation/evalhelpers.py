"""Data helpers shared by the evaluator tests."""

from __future__ import annotations

import json
from pathlib import Path

from modelcore.evaluation.taskconfig import BUILTIN_TASKS_DIR


def builtin_rows(task_folder: str, split: str) -> list[dict]:
    path = BUILTIN_TASKS_DIR / task_folder / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_runwright_run(run_dir: Path, step: int = 5, seed: int = 0) -> Path:
    """A run directory holding one checkpoint of a tiny random byte-level model, laid out as the trainer does."""
    import torch
    from safetensors.torch import save_file

    from modelcore.checkpoint import CHECKPOINTS_DIR, checkpoint_name, model_state_for_save
    from modelcore.config import RunConfig
    from modelcore.model import build_model
    from modelcore.tokenizer import ByteTokenizer

    cfg = RunConfig.from_dict(
        {
            "model": {"vocab_size": 260, "d_model": 32, "n_layers": 2, "n_heads": 4, "max_seq_len": 96},
            "data": {"tokenizer": "byte", "seq_len": 64},
        }
    )
    torch.manual_seed(seed)
    model = build_model(cfg.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0.0, 0.2)  # spread the predictions so choices differ
    path = Path(run_dir) / CHECKPOINTS_DIR / checkpoint_name(step)
    path.mkdir(parents=True)
    save_file(
        model_state_for_save(model.state_dict(), cfg.model.tie_embeddings), str(path / "model.safetensors")
    )
    (path / "config.json").write_text(cfg.to_json())
    ByteTokenizer().save(path / "tokenizer")
    (path / "meta.json").write_text(json.dumps({"step": step}))
    return Path(run_dir)
