"""Corpus -> token file -> random training windows.

The built-in corpus is the Python standard library's own ``.py`` files: it ships
with every Python, so a fresh machine trains on real text with no download.
Documents are read in sorted order, capped at ``data.max_corpus_mb``, tokenized
once into a flat ``uint16``/``uint32`` file (documents joined by the end-of-text
token), and memory-mapped by every rank. The last ``data.val_fraction`` of the
tokens is held out for validation.

Sampling is a pure function of (seed, step): the sampler draws the whole global
batch of an optimizer step and each rank takes its slice. That makes the state
one integer (exact resume) and makes N processes see the same global batch as
one process with N times the micro-batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sysconfig
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from modelcore.config import DataConfig
from modelcore.tokenizer import ByteTokenizer, HFTokenizer, load_tokenizer, train_bpe

TEXT_SUFFIXES = {".txt", ".md", ".py", ".rst", ".text"}
_FORMAT_VERSION = 1


def stdlib_files() -> list[Path]:
    """The standard library's .py files in a stable order (third-party packages excluded)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [
        p
        for p in root.rglob("*.py")
        if not {"site-packages", "dist-packages", "__pycache__"} & set(p.relative_to(root).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def corpus_files(corpus: str) -> list[Path]:
    if corpus == "stdlib":
        return stdlib_files()
    path = Path(corpus).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        suffixes = TEXT_SUFFIXES | {".jsonl", ".parquet", ".arrow"}
        return sorted(
            (p for p in path.rglob("*") if p.is_file() and p.suffix in suffixes),
            key=lambda p: p.relative_to(path).as_posix(),
        )
    raise ValueError(f"data.corpus: {corpus!r} is neither 'stdlib' nor an existing file or folder")


def iter_documents(files: list[Path]) -> Iterator[str]:
    """Text documents: a whole text file, each JSONL line's "text", each Parquet row's "text"."""
    for path in files:
        if path.suffix == ".jsonl":
            with open(path, encoding="utf-8") as f:
                for line in f:
                    if line.strip():
                        yield str(json.loads(line)["text"])
        elif path.suffix == ".parquet":
            import pyarrow.parquet as pq

            yield from (str(t) for t in pq.read_table(path, columns=["text"]).column("text").to_pylist())
        elif path.suffix == ".arrow":
            # A Hugging Face `datasets` folder (save_to_disk) holds Arrow stream files.
            import pyarrow as pa

            with pa.memory_map(str(path)) as source:
                table = pa.ipc.open_stream(source).read_all()
            yield from (str(t) for t in table.column("text").to_pylist())
        else:
            yield path.read_text(encoding="utf-8", errors="replace")


def capped_documents(corpus: str, max_mb: float) -> Iterator[str]:
    """Documents in order until ``max_mb`` megabytes of UTF-8; the last one is cut to fit."""
    budget = int(max_mb * 1_000_000) if max_mb > 0 else None
    for doc in iter_documents(corpus_files(corpus)):
        if budget is not None:
            raw = doc.encode("utf-8")
            if len(raw) >= budget:
                yield raw[:budget].decode("utf-8", errors="ignore")
                return
            budget -= len(raw)
        yield doc


def prepare_tokenizer(cfg: DataConfig, run_dir: Path) -> ByteTokenizer | HFTokenizer:
    """The run's tokenizer: reloaded from the run dir if saved there, else built and saved."""
    saved = run_dir / "tokenizer"
    if saved.exists():
        return load_tokenizer(saved)
    if cfg.tokenizer == "byte":
        tok: ByteTokenizer | HFTokenizer = ByteTokenizer()
    elif cfg.tokenizer == "bpe":
        tok = train_bpe(capped_documents(cfg.corpus, cfg.max_corpus_mb), cfg.bpe_vocab_size)
    else:
        tok = load_tokenizer(Path(cfg.tokenizer).expanduser())
    tmp = run_dir / "tokenizer.tmp"
    tok.save(tmp)
    os.replace(tmp, saved)
    return tok


def _cache_key(cfg: DataConfig, tok: ByteTokenizer | HFTokenizer, tokenizer_dir: Path) -> str:
    files = corpus_files(cfg.corpus)
    h = hashlib.sha256()
    h.update(json.dumps([_FORMAT_VERSION, cfg.corpus, cfg.max_corpus_mb]).encode())
    for p in files:
        st = p.stat()
        h.update(f"{p}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for p in sorted(tokenizer_dir.iterdir()):
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


def token_file_path(
    cfg: DataConfig, tok: ByteTokenizer | HFTokenizer, tokenizer_dir: Path, cache_dir: Path
) -> Path:
    return cache_dir / f"tokens-{_cache_key(cfg, tok, tokenizer_dir)}.bin"


def _complete(token_file: Path) -> bool:
    # The .json is written after the .bin is in place: together they mean "complete".
    return token_file.exists() and token_file.with_suffix(".json").exists()


def cached_token_file(
    cfg: DataConfig, tok: ByteTokenizer | HFTokenizer, tokenizer_dir: Path, cache_dir: Path
) -> Path | None:
    """The finished token file for this corpus and tokenizer, if one is in the cache."""
    out = token_file_path(cfg, tok, tokenizer_dir, cache_dir)
    return out if _complete(out) else None


def tokenize_corpus(
    cfg: DataConfig,
    tok: ByteTokenizer | HFTokenizer,
    tokenizer_dir: Path,
    cache_dir: Path,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Tokenize the corpus once into ``cache_dir/tokens-<key>.bin``; reuse it when present.

    The key covers the corpus files (paths, sizes, mtimes), the cap and the
    tokenizer, so a changed input never reads a stale cache. The file is written
    under a temporary name and renamed, so a crash never leaves a half file.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    cached = cached_token_file(cfg, tok, tokenizer_dir, cache_dir)
    if cached is not None:
        return cached
    key = _cache_key(cfg, tok, tokenizer_dir)
    out = cache_dir / f"tokens-{key}.bin"
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    tmp = cache_dir / f"tokens-{key}.{os.getpid()}.tmp"
    n_tokens, n_docs = 0, 0
    eos = np.array([tok.eos_id], dtype=dtype)
    with open(tmp, "wb") as f:
        for doc in capped_documents(cfg.corpus, cfg.max_corpus_mb):
            if isinstance(tok, ByteTokenizer):
                ids = np.frombuffer(doc.encode("utf-8"), dtype=np.uint8).astype(dtype)
            else:
                ids = np.asarray(tok.encode(doc), dtype=dtype)
            f.write(ids.tobytes())
            f.write(eos.tobytes())
            n_tokens += len(ids) + 1
            n_docs += 1
            if progress and n_docs % 500 == 0:
                progress(f"tokenized {n_docs} documents, {n_tokens:,} tokens")
    meta = {
        "n_tokens": n_tokens,
        "n_docs": n_docs,
        "dtype": np.dtype(dtype).name,
        "corpus": cfg.corpus,
        "max_corpus_mb": cfg.max_corpus_mb,
    }
    os.replace(tmp, out)
    (cache_dir / f"tokens-{key}.json").write_text(json.dumps(meta))
    if progress:
        progress(f"tokenized corpus: {n_docs} documents, {n_tokens:,} tokens -> {out.name}")
    return out


def wait_for_token_file(
    cfg: DataConfig,
    run_dir: Path,
    cache_dir: Path,
    stopped: Callable[[], bool] = lambda: False,
    poll_s: float = 0.5,
) -> tuple[ByteTokenizer | HFTokenizer, Path]:
    """For ranks other than 0: the tokenizer and token file, once rank 0 has written them.

    No timeout (a first tokenization may take long); ``stopped`` ends the wait with
    ``InterruptedError`` when the run is cancelled or the launcher signals the ranks.
    """

    def wait_until(ready: Callable[[], bool]) -> None:
        while not ready():
            if stopped():
                raise InterruptedError("stopped while waiting for rank 0 to prepare the data")
            time.sleep(poll_s)

    saved = run_dir / "tokenizer"
    wait_until(saved.exists)
    tok = load_tokenizer(saved)
    out = token_file_path(cfg, tok, saved, cache_dir)
    wait_until(lambda: _complete(out))
    return tok, out


@dataclass(frozen=True)
class TokenSplits:
    train: np.ndarray  # memory-mapped 1-D token array
    val: np.ndarray

    @classmethod
    def open(cls, path: Path, val_fraction: float, seq_len: int) -> TokenSplits:
        meta = json.loads(path.with_suffix(".json").read_text())
        tokens = np.memmap(path, dtype=np.dtype(meta["dtype"]), mode="r")
        n_val = int(len(tokens) * val_fraction)
        if val_fraction > 0:
            n_val = max(n_val, seq_len + 1)
        if len(tokens) - n_val < seq_len + 1:
            raise ValueError(
                f"data.corpus: only {len(tokens):,} tokens, too few for data.seq_len "
                f"({seq_len}) with data.val_fraction {val_fraction}; raise "
                "data.max_corpus_mb or lower data.seq_len"
            )
        return cls(train=tokens[: len(tokens) - n_val], val=tokens[len(tokens) - n_val :])


class WindowSampler:
    """Random (input, target) windows; the global batch of step s depends only on (seed, s).

    Per optimizer step the sampler draws ``accum x world x micro`` start offsets
    and this rank takes ``[:, rank, :]``: micro-batch a of rank r is the same
    whatever the split of the global batch over ranks.
    """

    def __init__(
        self,
        tokens: np.ndarray,
        seq_len: int,
        micro_batch: int,
        grad_accum: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.tokens, self.seq_len = tokens, seq_len
        self.micro_batch, self.grad_accum = micro_batch, grad_accum
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.step = 0  # optimizer steps drawn so far: the whole state

    def _windows(self, starts: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        rows = np.stack([np.asarray(self.tokens[s : s + self.seq_len + 1], dtype=np.int64) for s in starts])
        batch = torch.from_numpy(rows)  # (micro, seq_len + 1)
        return batch[:, :-1], batch[:, 1:]

    def batches_for(
        self, step: int, stream: int = 0, accum: int | None = None
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        accum = self.grad_accum if accum is None else accum
        rng = np.random.default_rng([self.seed, stream, step])
        high = len(self.tokens) - self.seq_len - 1
        starts = rng.integers(0, high + 1, size=(accum, self.world_size, self.micro_batch))
        return [self._windows(starts[a, self.rank]) for a in range(accum)]

    def next_step(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The micro-batches (input, target), each (micro, seq_len), of the next optimizer step."""
        batches = self.batches_for(self.step)
        self.step += 1
        return batches

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step, "seed": self.seed}

    def load_state_dict(self, state: dict[str, int]) -> None:
        if state["seed"] != self.seed:
            raise ValueError(
                f"train.seed changed from {state['seed']} to {self.seed}; resume "
                "would not continue the same data order"
            )
        self.step = int(state["step"])


def validation_batches(
    val_tokens: np.ndarray,
    seq_len: int,
    micro_batch: int,
    n_batches: int,
    seed: int,
    rank: int,
    world_size: int,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same held-out windows at every evaluation, so val/loss curves are comparable."""
    sampler = WindowSampler(val_tokens, seq_len, micro_batch, 1, seed, rank, world_size)
    return sampler.batches_for(0, stream=1, accum=n_batches)
