"""The models an evaluation can score: a Runwright checkpoint or a local Hugging Face causal LM.

Both are wrapped in ``EvalModel``: tokenization with lm-eval's conventions
(what ``add_special_tokens`` does, which token stands in for an empty
context, the longest input), a plain forward pass, and a *shared-prefix* forward
that runs each distinct context once and its continuations on top of the
context's KV cache.
"""

from __future__ import annotations

import abc
import inspect
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when neither config nor tokenizer says
_TOKENIZER_INFINITY = 1_000_000_000_000_000_019_884_624_838_656


class EvalModel(abc.ABC):
    """What the scorer needs from a model. ``logits`` rows are right-padded, causal, unmasked."""

    name: str = ""
    max_length: int = DEFAULT_MAX_LENGTH
    prefix_token_id: int = 0
    eot_token_id: int | None = 0
    pad_token_id: int = 0  # fills right padding; causal models never read it back
    device: torch.device = torch.device("cpu")

    @abc.abstractmethod
    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        """Token ids of ``text``; ``add_special_tokens`` None means the model's default."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``."""

    @abc.abstractmethod
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) -> (B, T, V) float logits."""

    @abc.abstractmethod
    def shared_prefix_logits(
        self, contexts: list[list[int]], rows: list[tuple[int, list[int]]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits after each context's last token, and over each row's tokens on top of its context.

        ``rows`` are ``(context index, tokens)``; returns ``(G, V)`` and ``(R, T_max, V)``
        (rows right-padded). Each context runs once however many rows continue it.
        """

    @abc.abstractmethod
    def greedy_tokens(self, ids: list[int], max_new: int) -> Iterator[int]:
        """Yield up to ``max_new`` greedily chosen next tokens after ``ids``."""

    def model_info(self) -> dict[str, Any]:
        return {"model": self.name}


class HFCausalLM(EvalModel):
    """A local ``transformers`` causal LM directory (never downloads)."""

    def __init__(self, path: str | Path, device: str = "cpu", dtype: str = "float32"):
        import transformers

        self.name = str(path)
        self.device = torch.device(device)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        self.model = transformers.AutoModelForCausalLM.from_pretrained(
            str(path), local_files_only=True, dtype=getattr(torch, dtype)
        )
        self.model.to(self.device).eval()
        tok = self.tokenizer
        self.eot_token_id = tok.eos_token_id
        self.prefix_token_id = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        if self.prefix_token_id is None:
            raise ValueError(f"--model: the tokenizer in {path} has neither a BOS nor an EOS token")
        self.pad_token_id = next(t for t in (tok.eos_token_id, tok.pad_token_id, 0) if t is not None)
        self._prefix_text = tok.decode(self.prefix_token_id)
        self.max_length = _hf_max_length(self.model.config, tok)
        self._dtype = dtype
        # transformers renames past_key_values to cache (deprecated from 5.x); accept both.
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._keeps_logits = "logits_to_keep" in params

    def _cache_of(self, out: Any) -> Any:
        cache = getattr(out, "cache", None)  # newer transformers; the old name warns there
        return cache if cache is not None else getattr(out, "past_key_values", None)

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        # lm-eval leaves add_special_tokens to the tokenizer unless the text already starts with BOS.
        if add_special_tokens is None and self._prefix_text and text.startswith(self._prefix_text):
            add_special_tokens = False
        kwargs = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        return self.tokenizer.encode(text, **kwargs)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids.to(self.device)).logits

    @torch.inference_mode()
    def shared_prefix_logits(
        self, contexts: list[list[int]], rows: list[tuple[int, list[int]]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        lens = torch.tensor([len(c) for c in contexts])
        ctx = _right_pad(contexts, self.pad_token_id).to(self.device)  # (G, P)
        # Right padding needs no mask in a causal prefill. Only the contexts' last positions are
        # projected onto the vocabulary; length-sorted chunks have few distinct ones.
        ends = (lens - 1).to(self.device)
        if self._keeps_logits:
            keep = torch.unique(ends)
            out = self.model(ctx, use_cache=True, logits_to_keep=keep)
            last = out.logits[
                torch.arange(len(contexts), device=self.device), torch.searchsorted(keep, ends)
            ]  # (G, V)
        else:
            out = self.model(ctx, use_cache=True)
            last = out.logits[torch.arange(len(contexts), device=self.device), ends]
        if not rows:
            return last, last.new_zeros(0, 0, last.shape[-1])
        index = torch.tensor([g for g, _ in rows], device=self.device)
        cache = self._cache_of(out)
        cache.reorder_cache(index)
        cont = _right_pad([t for _, t in rows], self.pad_token_id).to(self.device)  # (R, C)
        R, C = cont.shape
        P = ctx.shape[1]
        # Continuations see their own context's real tokens, never another's padding.
        past_mask = (torch.arange(P).unsqueeze(0) < lens.unsqueeze(1)).to(self.device)[index]  # (R, P)
        mask = torch.cat([past_mask, torch.ones(R, C, dtype=torch.bool, device=self.device)], dim=1)
        positions = lens.to(self.device)[index].unsqueeze(1) + torch.arange(C, device=self.device)  # (R, C)
        out = self.model(
            cont,
            attention_mask=mask.long(),
            position_ids=positions,
            use_cache=True,
            **{self._cache_arg: cache},
        )
        return last, out.logits

    @torch.inference_mode()
    def greedy_tokens(self, ids: list[int], max_new: int) -> Iterator[int]:
        out = self.model(torch.tensor([ids], device=self.device), use_cache=True)
        for _ in range(max_new):
            token = int(out.logits[0, -1].argmax())
            yield token
            step = torch.tensor([[token]], device=self.device)
            out = self.model(step, use_cache=True, **{self._cache_arg: self._cache_of(out)})

    def model_info(self) -> dict[str, Any]:
        return {
            "model": "hf",
            "model_args": {"pretrained": self.name, "dtype": self._dtype},
            "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
            "model_dtype": str(next(self.model.parameters()).dtype),
            "max_length": self.max_length,
        }


class RunwrightLM(EvalModel):
    """A Runwright run's checkpoint through ``modelcore.load_checkpoint``."""

    def __init__(self, run_dir: str | Path, step: int | None = None, device: str = "cpu"):
        from modelcore.checkpoint import load_checkpoint

        self.device = torch.device(device)
        self.model, self.config, self.tokenizer = load_checkpoint(run_dir, step=step, device=self.device)
        self.name = str(run_dir)
        self.step = step
        # Training joins documents with end-of-text, so that token is what precedes a text's start.
        self.eot_token_id = self.tokenizer.eos_id
        self.prefix_token_id = self.tokenizer.eos_id
        self.pad_token_id = self.tokenizer.eos_id
        self.max_length = self.config.model.max_seq_len
        self.run_data_config = self.config.data  # for tasks on the run's own held-out data

    def encode(self, text: str, add_special_tokens: bool | None = None) -> list[int]:
        return list(self.tokenizer.encode(text))

    def decode(self, ids: Sequence[int]) -> str:
        specials = {self.tokenizer.eos_id, self.tokenizer.bos_id, getattr(self.tokenizer, "pad_id", None)}
        return self.tokenizer.decode([i for i in ids if i not in specials])

    @torch.inference_mode()
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids.to(self.device)).float()

    @torch.inference_mode()
    def shared_prefix_logits(
        self, contexts: list[list[int]], rows: list[tuple[int, list[int]]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # The Runwright KV cache keeps one length for the whole batch, so contexts of
        # equal length share a prefill; the scorer groups them that way.
        if len({len(c) for c in contexts}) != 1:
            raise ValueError("RunwrightLM.shared_prefix_logits needs contexts of equal length")
        ctx = torch.tensor(contexts, device=self.device)  # (G, P)
        G, P = ctx.shape
        cont = _right_pad([t for _, t in rows], self.pad_token_id).to(self.device) if rows else None
        cache = self.model.new_cache(G, P + (cont.shape[1] if cont is not None else 0))
        last = self.model(ctx, cache=cache)[:, -1, :].float()  # (G, V)
        if cont is None:
            return last, last.new_zeros(0, 0, last.shape[-1])
        index = torch.tensor([g for g, _ in rows], device=self.device)
        cache.keys = [k[index] for k in cache.keys]
        cache.values = [v[index] for v in cache.values]
        return last, self.model(cont, cache=cache).float()

    @torch.inference_mode()
    def greedy_tokens(self, ids: list[int], max_new: int) -> Iterator[int]:
        cache = self.model.new_cache(1, min(len(ids) + max_new, self.max_length))
        logits = self.model(torch.tensor([ids], device=self.device), cache=cache)
        for i in range(max_new):
            token = int(logits[0, -1].argmax())
            yield token
            if i + 1 == max_new or cache.length >= cache.max_len:
                return
            logits = self.model(torch.tensor([[token]], device=self.device), cache=cache)

    def model_info(self) -> dict[str, Any]:
        return {
            "model": "runwright",
            "model_args": {"run_dir": self.name, "step": self.step},
            "model_num_parameters": sum(p.numel() for p in self.model.parameters()),
            "max_length": self.max_length,
        }

    equal_length_prefill = True


def _right_pad(seqs: list[list[int]], pad: int) -> torch.Tensor:
    width = max(len(s) for s in seqs)
    out = torch.full((len(seqs), width), pad, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out


def _hf_max_length(config: Any, tokenizer: Any) -> int:
    cfg = getattr(config, "text_config", None) or config
    for attr in ("n_positions", "max_position_embeddings", "n_ctx"):
        value = getattr(cfg, attr, None)
        if value is not None:
            return int(value)
    limit = getattr(tokenizer, "model_max_length", None)
    if limit is not None and limit != _TOKENIZER_INFINITY:
        return int(limit)
    return DEFAULT_MAX_LENGTH


def is_runwright_run(path: Path) -> bool:
    return (path / "checkpoints").is_dir() or (path / "events.jsonl").exists()


def load_model(
    path: str | Path, step: int | None = None, device: str = "cpu", dtype: str = "float32"
) -> EvalModel:
    """A Runwright run directory (latest or ``step`` checkpoint) or a local Hugging Face directory."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise ValueError(
            f"--model: {path} is not a folder (a Runwright run directory or a Hugging Face model)"
        )
    if is_runwright_run(p):
        return RunwrightLM(p, step=step, device=device)
    if (p / "config.json").exists():
        if step is not None:
            raise ValueError("--step: only applies to Runwright run directories")
        cfg = json.loads((p / "config.json").read_text())
        if "model" in cfg and "train" in cfg:
            raise ValueError(f"--model: {path} holds a Runwright config but no checkpoints/ folder")
        return HFCausalLM(p, device=device, dtype=dtype)
    raise ValueError(
        f"--model: {path} has neither checkpoints/ (Runwright run) nor config.json (Hugging Face)"
    )
