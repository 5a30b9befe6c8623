"""Tokenize a run's corpus ahead of training: ``python -m modelcore.prepare --run-dir DIR [config args]``.

Takes the same config arguments as ``modelcore.train``. Builds (or trains, for BPE)
the tokenizer into ``DIR/tokenizer`` and writes the memory-mapped token file into the
cache (``$RUNWRIGHT_CACHE_DIR``, default ``DIR/data``), printing progress. Training
then starts from the cached file; without this step the trainer does the same
work itself on rank 0 before its first step.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from modelcore.config import ConfigError
from modelcore.train import parse_args, resolve_run_config, save_run_config


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        cfg = resolve_run_config(args)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from modelcore.data import TokenSplits, prepare_tokenizer, tokenize_corpus
    from modelcore.trainer import CACHE_DIR_ENV

    args.run_dir.mkdir(parents=True, exist_ok=True)
    save_run_config(cfg, args.run_dir)
    started = time.monotonic()
    tokenizer = prepare_tokenizer(cfg.data, args.run_dir)
    print(f"tokenizer: {cfg.data.tokenizer}, vocabulary {tokenizer.vocab_size}", flush=True)
    cache = Path(os.environ.get(CACHE_DIR_ENV) or args.run_dir / "data")
    path = tokenize_corpus(
        cfg.data, tokenizer, args.run_dir / "tokenizer", cache, progress=lambda m: print(m, flush=True)
    )
    splits = TokenSplits.open(path, cfg.data.val_fraction, cfg.data.seq_len)
    print(
        json.dumps(
            {
                "token_file": str(path),
                "train_tokens": len(splits.train),
                "val_tokens": len(splits.val),
                "seconds": round(time.monotonic() - started, 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
