"""Corpus, tokenizers, token cache and the window sampler."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from modelcore.config import DataConfig
from modelcore.data import (
    TokenSplits,
    WindowSampler,
    capped_documents,
    prepare_tokenizer,
    stdlib_files,
    tokenize_corpus,
    validation_batches,
)
from modelcore.tokenizer import ByteTokenizer, load_tokenizer, train_bpe


def test_stdlib_corpus_is_sorted_python_source_without_site_packages() -> None:
    files = stdlib_files()
    assert len(files) > 500
    assert all(f.suffix == ".py" and "site-packages" not in f.parts for f in files)
    assert files == sorted(files, key=lambda p: p.as_posix())


def test_corpus_cap_is_respected() -> None:
    docs = list(capped_documents("stdlib", 0.05))
    assert sum(len(d.encode()) for d in docs) <= 50_000
    assert sum(len(d.encode()) for d in docs) > 45_000


def test_byte_tokenizer_round_trips_unicode(tmp_path: Path) -> None:
    tok = ByteTokenizer()
    text = "déjà vu — ∑ 🐍"
    assert tok.decode(tok.encode(text)) == text
    assert tok.vocab_size == 260 and max(tok.encode(text)) < 256
    tok.save(tmp_path)
    assert isinstance(load_tokenizer(tmp_path), ByteTokenizer)


def test_bpe_tokenizer_trains_and_reloads(tmp_path: Path) -> None:
    tok = train_bpe(capped_documents("stdlib", 0.05), vocab_size=400)
    text = "def main(argv):\n    return 0\n"
    ids = tok.encode(text)
    assert tok.decode(ids) == text and len(ids) < len(text.encode())
    tok.save(tmp_path)
    again = load_tokenizer(tmp_path)
    assert again.encode(text) == ids and again.eos_id == tok.eos_id


def test_token_file_is_cached_and_split(tmp_path: Path) -> None:
    cfg = DataConfig(max_corpus_mb=0.1, val_fraction=0.1, seq_len=32)
    tok = prepare_tokenizer(cfg, tmp_path)
    path = tokenize_corpus(cfg, tok, tmp_path / "tokenizer", tmp_path / "cache")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["dtype"] == "uint16" and meta["n_tokens"] == path.stat().st_size // 2
    mtime = path.stat().st_mtime_ns
    assert tokenize_corpus(cfg, tok, tmp_path / "tokenizer", tmp_path / "cache") == path
    assert path.stat().st_mtime_ns == mtime  # reused, not rewritten
    splits = TokenSplits.open(path, cfg.val_fraction, cfg.seq_len)
    assert len(splits.val) == int(meta["n_tokens"] * 0.1)
    assert len(splits.train) + len(splits.val) == meta["n_tokens"]
    text = ByteTokenizer().decode(splits.train[:2000].tolist())
    assert "import" in text or "def " in text


def test_too_small_corpus_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "tiny.txt").write_text("hello")
    cfg = DataConfig(corpus=str(tmp_path / "tiny.txt"), seq_len=64)
    tok = prepare_tokenizer(cfg, tmp_path)
    path = tokenize_corpus(cfg, tok, tmp_path / "tokenizer", tmp_path / "cache")
    with pytest.raises(ValueError, match="data.corpus"):
        TokenSplits.open(path, cfg.val_fraction, cfg.seq_len)


def test_sampler_targets_are_inputs_shifted_by_one() -> None:
    tokens = np.arange(1000, dtype=np.uint16)
    x, y = WindowSampler(tokens, 16, 4, 1, seed=0).next_step()[0]
    assert x.shape == y.shape == (4, 16)
    assert (y[:, :-1] == x[:, 1:]).all() and (y[:, -1] == x[:, -1] + 1).all()


def test_sampler_state_restores_the_same_stream() -> None:
    tokens = np.arange(5000, dtype=np.uint16)
    a = WindowSampler(tokens, 16, 4, 2, seed=3)
    for _ in range(5):
        a.next_step()
    b = WindowSampler(tokens, 16, 4, 2, seed=3)
    b.load_state_dict(a.state_dict())
    for (xa, _), (xb, _) in zip(a.next_step(), b.next_step(), strict=True):
        assert (xa == xb).all()
    with pytest.raises(ValueError, match="train.seed"):
        WindowSampler(tokens, 16, 4, 2, seed=4).load_state_dict(a.state_dict())


def test_ranks_split_the_same_global_batch_as_one_process() -> None:
    tokens = np.arange(5000, dtype=np.uint16)
    single = WindowSampler(tokens, 16, 8, 1, seed=1).next_step()[0][0]
    halves = [WindowSampler(tokens, 16, 4, 1, seed=1, rank=r, world_size=2).next_step()[0][0] for r in (0, 1)]
    assert (np.concatenate(halves) == single.numpy()).all()
    val_a = validation_batches(tokens, 16, 4, 2, seed=1, rank=0, world_size=1)
    val_b = validation_batches(tokens, 16, 4, 2, seed=1, rank=0, world_size=1)
    assert all((a[0] == b[0]).all() for a, b in zip(val_a, val_b, strict=True))


def test_other_ranks_wait_for_the_files_rank_zero_writes(tmp_path: Path) -> None:
    import threading

    from modelcore.data import wait_for_token_file

    cfg = DataConfig(max_corpus_mb=0.02, seq_len=32)

    def rank_zero() -> None:
        tok = prepare_tokenizer(cfg, tmp_path)
        tokenize_corpus(cfg, tok, tmp_path / "tokenizer", tmp_path / "cache")

    writer = threading.Timer(0.3, rank_zero)
    writer.start()
    tok, path = wait_for_token_file(cfg, tmp_path, tmp_path / "cache", poll_s=0.05)
    writer.join()
    assert isinstance(tok, ByteTokenizer) and path.exists() and path.with_suffix(".json").exists()
    with pytest.raises(InterruptedError, match="stopped"):
        wait_for_token_file(cfg, tmp_path / "elsewhere", tmp_path / "cache", lambda: True, poll_s=0.05)


def test_text_jsonl_parquet_and_datasets_folders_are_read(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from modelcore.data import corpus_files, iter_documents

    (tmp_path / "a.txt").write_text("plain text")
    (tmp_path / "b.jsonl").write_text(
        json.dumps({"text": "json one"}) + "\n\n" + json.dumps({"text": "json two"})
    )
    pq.write_table(pa.table({"text": ["parquet row"], "other": [1]}), tmp_path / "c.parquet")
    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"text": ["arrow row"]}).save_to_disk(str(tmp_path / "d_saved"))
    (tmp_path / "ignored.bin").write_bytes(b"\0\1")
    docs = list(iter_documents(corpus_files(str(tmp_path))))
    assert docs == ["plain text", "json one", "json two", "parquet row", "arrow row"]
    with pytest.raises(ValueError, match="data.corpus"):
        corpus_files(str(tmp_path / "missing"))
