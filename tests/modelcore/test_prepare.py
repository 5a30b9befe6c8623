"""The separate prepare step writes the tokenizer and the token file the trainer then reuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcore.data import prepare_tokenizer, tokenize_corpus
from modelcore.prepare import main
from modelcore.train import resolve_run_config


def test_prepare_writes_what_training_reuses(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("RUNWRIGHT_CACHE_DIR", raising=False)
    args = ["--run-dir", str(tmp_path), "--preset", "tiny-cpu", "--set", "data.max_corpus_mb=0.05"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    token_file = Path(summary["token_file"])
    assert (
        token_file.exists()
        and summary["train_tokens"] + summary["val_tokens"] == token_file.stat().st_size // 2
    )
    assert (tmp_path / "config.json").exists() and (tmp_path / "tokenizer").is_dir()
    from modelcore.train import parse_args

    cfg = resolve_run_config(parse_args(["--run-dir", str(tmp_path)]))
    assert cfg.data.max_corpus_mb == 0.05
    tok = prepare_tokenizer(cfg.data, tmp_path)
    assert tokenize_corpus(cfg.data, tok, tmp_path / "tokenizer", tmp_path / "data") == token_file


def test_prepare_reports_a_bad_config(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--run-dir", str(tmp_path), "--set", "model.n_heads=5"]) == 2
    assert "model.n_heads" in capsys.readouterr().err
