"""One sampling job: ``python -m modelcore.sample_job RUN_DIR --step N --prompt-file F``.

The worker's sampling runner (``workers.sample_jobs``) starts this and tails its output:
one JSON line per piece of text as soon as its token is chosen (``{"event": "token",
"text": ...}``), then ``{"event": "done", "text": <the whole continuation>}``. The prompt
comes from a file, not the command line (it may be long, and a command line is visible to
every user of the host). Generation is ``modelcore.generate``'s, with the same settings.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from modelcore.generate import sample_tokens


def _emit(event: dict) -> None:
    sys.stdout.write(json.dumps(event, ensure_ascii=False) + "\n")
    sys.stdout.flush()  # the runner reads the log as it grows: each token is seen at once


class TextStream:
    """Turns token ids into text pieces, holding back an incomplete UTF-8 character.

    A byte-level token may end in the middle of a character; decoding what came so far
    would show a replacement character that the next token turns into the real one.
    """

    def __init__(self, decode) -> None:
        self.decode = decode
        self.ids: list[int] = []
        self.sent = ""

    def feed(self, token: int) -> str:
        self.ids.append(token)
        text = self.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.sent):
            return ""
        piece, self.sent = text[len(self.sent) :], text
        return piece


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m modelcore.sample_job", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--step", type=int, required=True, help="Checkpoint step.")
    parser.add_argument("--prompt-file", type=Path, required=True, help="UTF-8 text to continue.")
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 is greedy decoding.")
    parser.add_argument("--top-p", type=float, default=1.0, help="Nucleus mass; 1 keeps every token.")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    from modelcore.checkpoint import load_checkpoint

    try:
        prompt = args.prompt_file.read_text(encoding="utf-8")
        model, _, tokenizer = load_checkpoint(args.run_dir, args.step, device=args.device)
        stream = TextStream(tokenizer.decode)

        def on_token(token: int) -> None:
            if token != tokenizer.eos_id and (piece := stream.feed(token)):
                _emit({"event": "token", "text": piece})

        ids = sample_tokens(
            model,
            tokenizer.encode(prompt),
            args.max_new_tokens,
            temperature=args.temperature,
            top_p=args.top_p,
            seed=args.seed,
            eos_id=tokenizer.eos_id,
            on_token=on_token,
        )
    except (FileNotFoundError, ValueError) as exc:
        _emit({"event": "error", "error": str(exc)})
        return 2
    if ids and ids[-1] == tokenizer.eos_id:
        ids = ids[:-1]
    _emit({"event": "done", "text": tokenizer.decode(ids), "tokens": len(ids)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
