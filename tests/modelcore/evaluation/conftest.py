"""Fixtures for the evaluator tests: a tiny random Hugging Face Llama and task folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.eval_throughput import build_tiny_hf_model

# Short enough that a few hundred characters of text take several rolling windows.
TINY_MAX_POSITIONS = 64


@pytest.fixture(scope="session")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_hf_model(
        tmp_path_factory.mktemp("tiny-llama") / "model",
        d_model=64,
        n_layers=2,
        vocab_size=400,
        max_positions=TINY_MAX_POSITIONS,
    )


@pytest.fixture(scope="session")
def tiny_hf_model(tiny_hf_dir: Path):
    from modelcore.evaluation.lm import HFCausalLM

    return HFCausalLM(tiny_hf_dir)
