"""Text generation with a KV cache: ``python -m modelcore.generate RUN_DIR --prompt "..."``.

``generate`` is the one function the CLI and, later, the web use: temperature
(0 is greedy), top-k and top-p (nucleus) filtering, a seed, and a stop at the
end-of-text token. The prompt is encoded once (prefill), then one token at a
time reuses the cached keys and values.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

from modelcore.model import Transformer
from modelcore.tokenizer import ByteTokenizer, HFTokenizer


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """Set to -inf every logit outside the top k and outside the smallest set with mass >= top_p."""
    logits = logits.clone()  # (B, V)
    if top_k > 0:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[..., -1, None]
        logits[logits < kth] = float("-inf")
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the mass before it already reaches top_p (the top one always stays).
        drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits[drop] = float("-inf")
    return logits


@torch.no_grad()
def sample_tokens(
    model: Transformer,
    prompt_ids: list[int],
    max_new_tokens: int,
    *,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
    eos_id: int | None = None,
    on_token: Callable[[int], None] | None = None,
) -> list[int]:
    """New token ids after ``prompt_ids`` (at most ``max_new_tokens``, ending at ``eos_id``).

    ``on_token`` is called with each new id as soon as it is chosen (a sampling job streams them).
    """
    if not prompt_ids:
        raise ValueError("prompt: must encode to at least one token")
    device = next(model.parameters()).device
    max_len = model.config.max_seq_len
    prompt_ids = prompt_ids[-(max_len - 1) :]  # keep the end of an over-long prompt
    max_new_tokens = min(max_new_tokens, max_len - len(prompt_ids))
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else torch.seed())
    was_training = model.training
    model.eval()
    cache = model.new_cache(1, len(prompt_ids) + max_new_tokens)
    logits = model(torch.tensor([prompt_ids], device=device), cache=cache)[:, -1].float()  # (1, V)
    out: list[int] = []
    for _ in range(max_new_tokens):
        if temperature <= 0:
            token = logits.argmax(dim=-1, keepdim=True)  # (1, 1)
        else:
            probs = filter_logits(logits / temperature, top_k, top_p).softmax(dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)  # (1, 1)
        out.append(int(token))
        if on_token is not None:
            on_token(out[-1])
        if eos_id is not None and out[-1] == eos_id:
            break
        if len(out) < max_new_tokens:
            logits = model(token, cache=cache)[:, -1].float()
    model.train(was_training)
    return out


def generate(
    model: Transformer,
    tokenizer: ByteTokenizer | HFTokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int = 0,
    top_p: float = 1.0,
    seed: int | None = None,
) -> str:
    """The text the model continues ``prompt`` with (the prompt itself not included)."""
    ids = sample_tokens(
        model,
        tokenizer.encode(prompt),
        max_new_tokens,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        seed=seed,
        eos_id=tokenizer.eos_id,
    )
    if ids and ids[-1] == tokenizer.eos_id:
        ids = ids[:-1]
    return tokenizer.decode(ids)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelcore.generate", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--step", type=int, default=None, help="Checkpoint step (default: the latest).")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 is greedy decoding.")
    parser.add_argument("--top-k", type=int, default=0, help="0 keeps every token.")
    parser.add_argument("--top-p", type=float, default=1.0, help="Nucleus mass; 1 keeps every token.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    from modelcore.checkpoint import load_checkpoint

    try:
        model, _, tokenizer = load_checkpoint(args.run_dir, args.step, device=args.device)
        text = generate(
            model,
            tokenizer,
            args.prompt,
            max_new_tokens=args.max_new_tokens,
            temperature=args.temperature,
            top_k=args.top_k,
            top_p=args.top_p,
            seed=args.seed,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(args.prompt + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
