"""Generation: KV-cached decoding equals full recomputation; sampling filters and seeds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from modelcore.checkpoint import save_weights_checkpoint
from modelcore.config import resolve
from modelcore.generate import filter_logits, generate, sample_tokens
from modelcore.model import Transformer
from modelcore.tokenizer import ByteTokenizer


def _model() -> Transformer:
    torch.manual_seed(0)
    return Transformer(resolve("tiny-cpu", {"model": {"n_experts": 2, "moe_top_k": 1}}).model).eval()


def test_greedy_with_cache_equals_greedy_recomputing_everything() -> None:
    model = _model()
    prompt = ByteTokenizer().encode("import os\n")
    cached = sample_tokens(model, prompt, 20, temperature=0)
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(20):
            ids.append(int(model(torch.tensor([ids]))[0, -1].argmax()))
    assert cached == ids[len(prompt) :]


def test_sampling_is_seeded_and_top_k_one_is_greedy() -> None:
    model = _model()
    prompt = [10, 20, 30]
    a = sample_tokens(model, prompt, 15, temperature=1.0, seed=3)
    assert a == sample_tokens(model, prompt, 15, temperature=1.0, seed=3)
    assert a != sample_tokens(model, prompt, 15, temperature=1.0, seed=4)
    assert sample_tokens(model, prompt, 15, temperature=1.0, top_k=1, seed=5) == sample_tokens(
        model, prompt, 15, temperature=0
    )


def test_filter_logits_keeps_top_k_and_nucleus() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.7)).tolist() == [[False, False, True, True]]
    assert torch.isinf(filter_logits(logits, top_p=0.5)).tolist() == [[False, True, True, True]]
    assert not torch.isinf(filter_logits(logits)).any()


def test_generation_stops_at_max_seq_len() -> None:
    model = _model()
    out = sample_tokens(model, [1] * 120, 50, temperature=0)
    assert len(out) == model.config.max_seq_len - 120


def test_cli_prints_prompt_and_continuation(tmp_path: Path) -> None:
    cfg = resolve("tiny-cpu")
    model = _model()
    save_weights_checkpoint(tmp_path, 3, Transformer(cfg.model), cfg, ByteTokenizer())
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "modelcore.generate",
            str(tmp_path),
            "--prompt",
            "def ",
            "--max-new-tokens",
            "5",
            "--seed",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("def ")
    assert generate(model, ByteTokenizer(), "x", max_new_tokens=3, seed=0) == generate(
        model, ByteTokenizer(), "x", max_new_tokens=3, seed=0
    )
