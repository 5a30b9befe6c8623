"""Tokenizers: UTF-8 bytes, a BPE trained on the corpus, or a local Hugging Face one.

All three share one small interface (``encode``, ``decode``, ``vocab_size``,
``eos_id``, ``save``) and are saved into the run directory, so a checkpoint
can always be decoded without the corpus or the config that produced it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

TOKENIZER_DIR = "tokenizer"
_META = "runwright_tokenizer.json"
SPECIALS = ("<|bos|>", "<|eos|>", "<|pad|>", "<|unk|>")


class Tokenizer(Protocol):
    vocab_size: int
    bos_id: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...

    def save(self, directory: str | Path) -> None: ...


class ByteTokenizer:
    """Token = UTF-8 byte (0-255), then four specials: vocabulary 260, nothing to train."""

    vocab_size = 256 + len(SPECIALS)
    bos_id, eos_id, pad_id, unk_id = 256, 257, 258, 259

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_bytes(self, data: bytes) -> bytes:
        """Raw bytes are already tokens; the data pipeline uses this to skip decoding."""
        return data

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(i for i in ids if i < 256).decode("utf-8", errors="replace")

    def save(self, directory: str | Path) -> None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        (out / _META).write_text(json.dumps({"type": "byte", "specials": list(SPECIALS)}))


class HFTokenizer:
    """A ``tokenizers.Tokenizer``: trained here (BPE) or read from a local directory."""

    def __init__(self, tok: object, kind: str):
        self._tok = tok
        self.kind = kind
        self.vocab_size = tok.get_vocab_size()
        eos = next(
            (
                t
                for t in ("<|eos|>", "</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>")
                if tok.token_to_id(t) is not None
            ),
            None,
        )
        bos = next(
            (t for t in ("<|bos|>", "<s>", "<|begin_of_text|>", "<bos>") if tok.token_to_id(t) is not None),
            eos,
        )
        if eos is None:
            raise ValueError(
                "data.tokenizer: the tokenizer has no end-of-text token "
                "(looked for <|eos|>, </s>, <|endoftext|>)"
            )
        self.eos_id = tok.token_to_id(eos)
        self.bos_id = tok.token_to_id(bos)

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self._tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode(list(ids))

    def save(self, directory: str | Path) -> None:
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        self._tok.save(str(out / "tokenizer.json"))
        (out / _META).write_text(json.dumps({"type": self.kind}))


def train_bpe(texts: Iterable[str], vocab_size: int) -> HFTokenizer:
    """A byte-level BPE (GPT-2 style pre-tokenisation) trained on ``texts``."""
    from tokenizers import Tokenizer as RawTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tok = RawTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIALS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return HFTokenizer(tok, "bpe")


def load_tokenizer(directory: str | Path) -> ByteTokenizer | HFTokenizer:
    """Read a tokenizer saved by ``save`` or a Hugging Face directory with tokenizer.json."""
    path = Path(directory)
    meta_file = path / _META
    kind = json.loads(meta_file.read_text())["type"] if meta_file.exists() else "hf"
    if kind == "byte":
        return ByteTokenizer()
    if not (path / "tokenizer.json").exists():
        raise ValueError(
            f"data.tokenizer: no tokenizer.json in {path} (a 'fast' Hugging Face "
            "tokenizer directory is needed)"
        )
    from tokenizers import Tokenizer as RawTokenizer

    return HFTokenizer(RawTokenizer.from_file(str(path / "tokenizer.json")), kind)
