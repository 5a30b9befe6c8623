"""The two checkpoint formats, in this process with one-process trainers: the trainer writes the
sharded one (``state/``, torch.distributed.checkpoint), and a run resumes as exactly from a
checkpoint of the format before it (``model.safetensors`` + ``optimizer.pt``), which users
still have. Multi-process saves and resumes at other layouts: test_tensor_parallel.py and
test_expert_parallel.py."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from modelcore import checkpoint as ckpt
from modelcore.config import resolve
from modelcore.trainer import FaultPlan, Trainer

CFG = resolve(
    "tiny-cpu",
    {
        "parallel": {"num_processes": 1},
        "data": {"max_corpus_mb": 0.1},
        "optim": {"warmup_steps": 2},
        "train": {"max_steps": 4, "eval_every": 0, "log_every": 1},
    },
)


@pytest.fixture
def restored_torch_state() -> Iterator[None]:
    deterministic = torch.are_deterministic_algorithms_enabled()
    yield
    torch.use_deterministic_algorithms(deterministic)
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


def _train(run_dir: Path, faults: FaultPlan | None = None) -> Trainer:
    trainer = Trainer(CFG, run_dir, None, SimpleNamespace(requested=False), faults)
    trainer.run()
    return trainer


def _to_the_format_before(path: Path, optimizer_state: dict) -> None:
    """Rewrite a checkpoint folder as the trainer wrote it before the sharded format."""
    weights = ckpt.read_sharded_model_state(path)
    save_file(ckpt.model_state_for_save(weights, CFG.model.tie_embeddings), str(path / "model.safetensors"))
    torch.save(optimizer_state, path / "optimizer.pt")
    shutil.rmtree(path / ckpt.STATE_DIR)


@pytest.mark.usefixtures("restored_torch_state")
def test_a_run_resumes_exactly_from_either_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNWRIGHT_CACHE_DIR", str(tmp_path / "cache"))
    straight = _train(tmp_path / "straight").model

    stopped = _train(tmp_path / "sharded", FaultPlan(stop_at_step=2))
    ((step, path),) = ckpt.list_checkpoints(tmp_path / "sharded")
    assert step == 2 and ckpt.is_sharded(path)
    assert json.loads((path / "meta.json").read_text())["format"] == "dcp"
    assert {p.name for p in (path / ckpt.STATE_DIR).iterdir()} == {".metadata", "__0_0.distcp"}
    assert not (path / "model.safetensors").exists() and (path / "rng_rank0.pt").exists()
    # The same checkpoint in the format before: what the trainer saved from one process.
    shutil.copytree(tmp_path / "sharded", tmp_path / "legacy", ignore=shutil.ignore_patterns("events.jsonl"))
    _to_the_format_before(
        tmp_path / "legacy" / path.relative_to(tmp_path / "sharded"), stopped.optimizer.state_dict()
    )

    for name in ("sharded", "legacy"):
        resumed = _train(tmp_path / name)
        assert resumed.step == 4
        for (key, a), b in zip(
            straight.state_dict().items(), resumed.model.state_dict().values(), strict=True
        ):
            torch.testing.assert_close(b, a, rtol=0, atol=1e-6, msg=f"{name}: {key}")
        # load_checkpoint reads the final (sharded) checkpoint whole.
        model, config, _ = ckpt.load_checkpoint(tmp_path / name)
        assert config == CFG
        torch.testing.assert_close(model.state_dict(), straight.state_dict(), rtol=0, atol=1e-6)


def test_load_checkpoint_reads_the_step_asked_for_in_either_format(tmp_path: Path) -> None:
    from modelcore.model import Transformer
    from modelcore.tokenizer import ByteTokenizer

    torch.manual_seed(0)
    old, new = Transformer(CFG.model), Transformer(CFG.model)
    ckpt.save_weights_checkpoint(tmp_path, 1, old, CFG, ByteTokenizer())
    ckpt.save_weights_checkpoint(tmp_path, 2, new, CFG, ByteTokenizer(), sharded=True)
    for step, model in ((1, old), (2, new)):
        loaded, _, _ = ckpt.load_checkpoint(tmp_path, step)
        torch.testing.assert_close(loaded.state_dict(), model.state_dict(), rtol=0, atol=0)
    assert loaded.lm_head.weight is loaded.embed_tokens.weight  # the tie survives the sharded format
