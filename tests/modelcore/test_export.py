"""Export to Hugging Face: transformers loads the directory and gives our logits, from a
checkpoint in either format (``model.safetensors``, or the trainer's sharded ``state/``)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelcore.checkpoint import save_weights_checkpoint
from modelcore.config import resolve
from modelcore.export import export_checkpoint
from modelcore.model import Transformer
from modelcore.tokenizer import ByteTokenizer

transformers = pytest.importorskip("transformers")


@pytest.mark.parametrize("sharded", [False, True], ids=["safetensors", "dcp"])
@pytest.mark.parametrize(
    ("overrides", "architecture"),
    [
        ({}, "LlamaForCausalLM"),
        ({"model": {"tie_embeddings": False, "n_kv_heads": 0}}, "LlamaForCausalLM"),
        ({"model": {"n_experts": 4, "moe_top_k": 2, "d_ff": 96}}, "MixtralForCausalLM"),
    ],
    ids=["llama-gqa-tied", "llama-mha-untied", "mixtral"],
)
def test_exported_model_gives_the_same_logits(
    tmp_path: Path, overrides: dict, architecture: str, sharded: bool
) -> None:
    cfg = resolve("tiny-cpu", overrides)
    torch.manual_seed(0)
    model = Transformer(cfg.model).eval()
    with torch.no_grad():  # move the norms off 1.0 so a swapped weight would show
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    path = save_weights_checkpoint(tmp_path / "run", 7, model, cfg, ByteTokenizer(), sharded=sharded)
    assert (path / "state" / ".metadata").is_file() == sharded
    out = export_checkpoint(tmp_path / "run", tmp_path / "hf")
    hf = transformers.AutoModelForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    assert type(hf).__name__ == architecture
    ids = torch.randint(0, 256, (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, theirs = model(ids), hf(ids).logits
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)


def test_exported_byte_tokenizer_gives_our_ids(tmp_path: Path) -> None:
    cfg = resolve("tiny-cpu")
    save_weights_checkpoint(tmp_path / "run", 1, Transformer(cfg.model), cfg, ByteTokenizer())
    out = export_checkpoint(tmp_path / "run", tmp_path / "hf")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    text = "def f(x):\n    return 'déjà 🐍'\n"
    ids = ByteTokenizer().encode(text)
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
    assert hf_tok.decode(ids) == text
    assert hf_tok.eos_token_id == ByteTokenizer.eos_id


def test_capacity_limited_moe_does_not_pretend_to_be_mixtral(tmp_path: Path) -> None:
    cfg = resolve("tiny-cpu", {"model": {"n_experts": 4, "moe_capacity_factor": 1.25, "d_ff": 96}})
    save_weights_checkpoint(tmp_path / "run", 1, Transformer(cfg.model), cfg, ByteTokenizer())
    with pytest.raises(ValueError, match="moe_capacity_factor"):
        export_checkpoint(tmp_path / "run", tmp_path / "hf")
