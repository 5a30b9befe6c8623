"""Fixtures for the evaluator tests: a tiny random Hugging Face Llama and task folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.eval_throughput import build_tiny_hf_model

# Short enough that long texts take several rolling windows and some few-shot prompts
# get left-truncated, long enough that most few-shot prompts fit whole.
TINY_MAX_POSITIONS = 96


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
