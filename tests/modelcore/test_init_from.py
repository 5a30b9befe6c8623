"""train.init_from: weights from a Hugging Face directory or a Runwright run, shapes checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelcore.checkpoint import save_weights_checkpoint
from modelcore.config import resolve
from modelcore.export import export_checkpoint
from modelcore.init_from import load_initial_weights
from modelcore.model import Transformer
from modelcore.tokenizer import ByteTokenizer


@pytest.mark.parametrize("overrides", [{}, {"model": {"n_experts": 4, "d_ff": 96}}], ids=["llama", "mixtral"])
def test_weights_round_trip_through_a_hugging_face_directory(tmp_path: Path, overrides: dict) -> None:
    cfg = resolve("tiny-cpu", overrides)
    torch.manual_seed(0)
    source = Transformer(cfg.model).eval()
    save_weights_checkpoint(tmp_path / "run", 1, source, cfg, ByteTokenizer())
    hf_dir = export_checkpoint(tmp_path / "run", tmp_path / "hf")
    # Whatever layout the installed transformers writes back (v5 fuses the experts) loads too.
    transformers = pytest.importorskip("transformers")
    transformers.AutoModelForCausalLM.from_pretrained(hf_dir).save_pretrained(tmp_path / "resaved")
    ids = torch.randint(0, 256, (1, 40))
    for origin in (hf_dir, tmp_path / "resaved", tmp_path / "run"):
        torch.manual_seed(1)
        fresh = Transformer(cfg.model).eval()
        load_initial_weights(fresh, origin, cfg)
        with torch.no_grad():
            torch.testing.assert_close(fresh(ids), source(ids))


def test_a_model_that_does_not_fit_names_the_field(tmp_path: Path) -> None:
    cfg = resolve("tiny-cpu")
    save_weights_checkpoint(tmp_path / "run", 1, Transformer(cfg.model), cfg, ByteTokenizer())
    hf_dir = export_checkpoint(tmp_path / "run", tmp_path / "hf")
    bigger = resolve("tiny-cpu", {"model": {"d_model": 128}})
    with pytest.raises(
        ValueError, match=r"train.init_from: .*hidden_size is 64 there but model.d_model is 128"
    ):
        load_initial_weights(Transformer(bigger.model), hf_dir, bigger)
    with pytest.raises(ValueError, match="train.init_from: .*shape"):
        load_initial_weights(Transformer(bigger.model), tmp_path / "run", bigger)
    with pytest.raises(ValueError, match="neither"):
        load_initial_weights(Transformer(cfg.model), tmp_path / "nothing", cfg)


def test_a_checkpoint_directory_starts_from_that_checkpoint_not_the_latest(tmp_path: Path) -> None:
    cfg = resolve("tiny-cpu")
    torch.manual_seed(0)
    early, late = Transformer(cfg.model).eval(), Transformer(cfg.model).eval()
    save_weights_checkpoint(tmp_path / "run", 1, early, cfg, ByteTokenizer())
    save_weights_checkpoint(tmp_path / "run", 2, late, cfg, ByteTokenizer())
    ids = torch.randint(0, 256, (1, 40))
    for origin, expected in (
        (tmp_path / "run" / "checkpoints" / "step_000001", early),
        (tmp_path / "run", late),
    ):
        fresh = Transformer(cfg.model).eval()
        load_initial_weights(fresh, origin, cfg)
        with torch.no_grad():
            torch.testing.assert_close(fresh(ids), expected(ids))
