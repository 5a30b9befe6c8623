"""Loglikelihood scoring, rolling windows and greedy generation over an ``EvalModel``.

Token conventions follow lm-evaluation-harness so that numbers match:

* a (context, continuation) pair moves the context's trailing whitespace onto the
  continuation, encodes ``context + continuation`` whole and ``context`` alone, and
  takes the continuation's tokens as the tail of the whole encoding past the
  context's length; an empty context is replaced by the prefix token;
* the model reads ``(context + continuation)[-(max_length + 1):][:-1]``;
* a rolling document is cut into windows of ``max_length`` predicted tokens, the
  first conditioned on the prefix token, each later one on just the token before it.

Requests whose contexts repeat (the choices of one question) are scored with the
context's forward pass shared: the context runs once and its continuations run on
its KV cache. Everything is length-sorted, longest first, so padding is small and
out-of-memory shows up at the first batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modelcore.evaluation.lm import EvalModel, _right_pad

Progress = Callable[[int], None]


@dataclass(frozen=True)
class TokenRequest:
    context: tuple[int, ...]
    continuation: tuple[int, ...]


def encode_pair(model: EvalModel, context: str, continuation: str) -> TokenRequest:
    """Tokens of one (context, continuation) request, as lm-eval splits them."""
    if context == "":
        cont = model.encode(continuation, add_special_tokens=False)
        if cont and cont[0] == model.prefix_token_id:
            return TokenRequest(tuple(cont[:1]), tuple(cont[1:]))
        return TokenRequest((model.prefix_token_id,), tuple(cont))
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = model.encode(context + continuation)
    ctx = model.encode(context)
    return TokenRequest(tuple(ctx), tuple(whole[len(ctx) :]))


def rolling_windows(tokens: Sequence[int], prefix_token: int, max_len: int) -> list[TokenRequest]:
    """Disjoint (context, predicted) windows that score every token of ``tokens`` exactly once."""
    if not tokens:
        return []
    tokens = list(tokens)
    first = min(max_len, len(tokens))
    windows = [TokenRequest((prefix_token,), tuple(tokens[:first]))]
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        # The window's input is the max_len tokens before `end`; all but the predicted ones are context.
        inp = tokens[end - max_len - 1 : end - 1]
        windows.append(TokenRequest(tuple(inp[: len(inp) - (n - 1)]), tuple(tokens[end - n : end])))
        done = end
    return windows


def _score_rows(logits: torch.Tensor, targets: torch.Tensor) -> tuple[float, bool]:
    """Sum of log-probabilities of ``targets`` (T,) under ``logits`` (T, V), and whether greedy picks them."""
    logp = F.log_softmax(logits.float(), dim=-1)
    ll = logp.gather(1, targets.unsqueeze(1)).sum().item()
    return ll, bool((logp.argmax(dim=-1) == targets).all())


def _score_plain(
    model: EvalModel, reqs: list[TokenRequest], batch_size: int, progress: Progress | None
) -> dict[TokenRequest, tuple[float, bool]]:
    out: dict[TokenRequest, tuple[float, bool]] = {}
    order = sorted(
        set(reqs), key=lambda r: (-(len(r.context) + len(r.continuation)), r.context + r.continuation)
    )
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        inputs = [list(r.context + r.continuation)[-(model.max_length + 1) :][:-1] for r in chunk]
        logits = model.logits(_right_pad(inputs, model.pad_token_id))  # (B, T, V)
        for i, r in enumerate(chunk):
            n = len(r.continuation)
            end = len(inputs[i])
            target = torch.tensor(r.continuation, device=logits.device)
            out[r] = _score_rows(logits[i, end - n : end], target)
        if progress:
            progress(len(chunk))
    return out


def _score_shared(
    model: EvalModel, reqs: list[TokenRequest], batch_size: int, progress: Progress | None
) -> dict[TokenRequest, tuple[float, bool]]:
    groups: dict[tuple[int, ...], list[TokenRequest]] = {}
    for r in dict.fromkeys(reqs):
        groups.setdefault(r.context, []).append(r)
    contexts = sorted(groups, key=lambda c: (-len(c), c))
    equal_length = getattr(model, "equal_length_prefill", False)
    chunks: list[list[tuple[int, ...]]] = []
    for ctx in contexts:
        last = chunks[-1] if chunks else None
        fits = last is not None and len(last) < batch_size
        if fits and (not equal_length or len(last[0]) == len(ctx)):
            last.append(ctx)
        else:
            chunks.append([ctx])
    out: dict[TokenRequest, tuple[float, bool]] = {}
    for chunk in chunks:
        rows = [(g, r) for g, ctx in enumerate(chunk) for r in groups[ctx]]
        ext = [(g, list(r.continuation[:-1])) for g, r in rows if len(r.continuation) > 1]
        last, ext_logits = model.shared_prefix_logits([list(c) for c in chunk], ext)
        j = 0
        for g, r in rows:
            n = len(r.continuation)
            if n > 1:
                row_logits = torch.cat([last[g : g + 1], ext_logits[j, : n - 1]], dim=0)  # (n, V)
                j += 1
            else:
                row_logits = last[g : g + 1]
            target = torch.tensor(r.continuation, device=row_logits.device)
            out[r] = _score_rows(row_logits, target)
        if progress:
            progress(len(rows))
    return out


def score_loglikelihood(
    model: EvalModel,
    reqs: Sequence[TokenRequest],
    batch_size: int = 8,
    share_prefix: bool = True,
    progress: Progress | None = None,
) -> list[tuple[float, bool]]:
    """(log P(continuation | context), continuation is the greedy choice) for each request.

    ``batch_size`` is the number of full-length sequences per forward pass, as in
    lm-eval: requests, or with ``share_prefix`` distinct contexts, whose
    continuations (a few tokens each) then run together on the contexts' cache.
    """
    if batch_size < 1:
        raise ValueError("--batch-size: must be at least 1")
    for r in reqs:
        if not r.continuation:
            raise ValueError("a continuation encodes to no tokens; nothing to score")
        if len(r.continuation) > model.max_length:
            raise ValueError(
                f"a continuation of {len(r.continuation)} tokens exceeds the model's {model.max_length}"
            )
    fits = [len(r.context) + len(r.continuation) <= model.max_length + 1 for r in reqs]
    shared = [r for r, ok in zip(reqs, fits, strict=True) if ok and share_prefix]
    plain = [r for r, ok in zip(reqs, fits, strict=True) if not (ok and share_prefix)]
    results = _score_shared(model, shared, batch_size, progress) if shared else {}
    if plain:
        results.update(_score_plain(model, plain, batch_size, progress))
    return [results[r] for r in reqs]


def _windows_as_texts(progress: Progress, n_texts: int, n_windows: int) -> Progress:
    """A progress counter fed scored windows that reports the matching share of ``n_texts``.

    The windows of one text are spread over the length-sorted batches, so counting a text
    only when its last window is scored would leave the bar still until the very end.
    """
    windows = reported = 0

    def report(n: int) -> None:
        nonlocal windows, reported
        windows += n
        texts = min(n_texts, windows * n_texts // n_windows)
        if texts > reported:
            progress(texts - reported)
            reported = texts

    return report


def score_rolling(
    model: EvalModel, texts: Sequence[str], batch_size: int = 8, progress: Progress | None = None
) -> list[float]:
    """Total log-likelihood of each text, scored in rolling windows of the model's length."""
    per_text = [rolling_windows(model.encode(t), model.prefix_token_id, model.max_length) for t in texts]
    flat = [w for ws in per_text for w in ws]
    if progress and flat:
        # Callers count one request per text, but the work is done window by window.
        progress = _windows_as_texts(progress, len(texts), len(set(flat)))
    scores = _score_plain(model, flat, batch_size, progress) if flat else {}
    return [sum(scores[w][0] for w in ws) for ws in per_text]


@torch.inference_mode()
def generate_greedy(
    model: EvalModel, context: str, until: Sequence[str], max_gen_toks: int, progress: Progress | None = None
) -> str:
    """Greedy continuation of ``context``, cut at the first stop string or end-of-text."""
    max_ctx = model.max_length - max_gen_toks
    if max_ctx <= 0:
        raise ValueError(
            f"generation_kwargs.max_gen_toks: {max_gen_toks} leaves no room in {model.max_length} tokens"
        )
    ids = model.encode(context)[-max_ctx:]
    generated: list[int] = []
    for token in model.greedy_tokens(ids, max_gen_toks):
        if token == model.eot_token_id:
            break
        generated.append(token)
        text = model.decode(generated)
        if any(s and s in text for s in until):
            break
    text = model.decode(generated)
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    if progress:
        progress(1)
    return text
