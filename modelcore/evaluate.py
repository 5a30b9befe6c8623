"""Evaluate a checkpoint on benchmark tasks.

    python -m modelcore.evaluate --model RUN_DIR_OR_HF_DIR --tasks rw_arith,rw_facts \\
        [--tasks-dir DIR] [--num-fewshot N] [--batch-size N] [--limit N] --output results.json

``--model`` is a Runwright run directory (latest checkpoint, or ``--step``) or a
local Hugging Face causal-LM directory. Tasks are lm-evaluation-harness YAML
files: the built-in ones (``--list-tasks``) and any folder given with
``--tasks-dir``. The results JSON (lm-eval's schema, see
``modelcore.evaluation.results``) goes to ``--output``, written atomically.

Progress goes to stderr as one JSON object per line, for a job runner to parse
(other lines, e.g. library warnings, do not start with ``{``)::

    {"event": "task_start", "task": "rw_arith", "docs": 80, "requests": 320, "task_number": 1, "task_count": 2}
    {"event": "progress", "task": "rw_arith", "done": 96, "total": 320, "task_number": 1, "task_count": 2}
    {"event": "task_end", "task": "rw_arith", "metrics": {"acc,none": 0.31, ...}, "task_number": 1, ...}
    {"event": "warning", "task": "...", "message": "..."}
    {"event": "done", "tasks": ["rw_arith", "rw_facts"]}
    {"event": "error", "error": "...: output_type: 'ranking' is not one of ..."}

Exit status 2 means bad arguments, a bad task or a bad model folder (the
``error`` event says which key to fix); 0 means the results file is complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from modelcore.evaluation.taskconfig import TaskConfigError, discover_tasks, resolve_tasks


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m modelcore.evaluate", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument("--model", help="Runwright run directory or local Hugging Face model directory")
    p.add_argument(
        "--step", type=int, default=None, help="checkpoint step of a Runwright run (default: latest)"
    )
    p.add_argument("--tasks", help="comma-separated task names or task YAML paths")
    p.add_argument("--tasks-dir", action="append", default=[], help="extra folder of task YAML files")
    p.add_argument(
        "--registry-only",
        action="store_true",
        help="look --tasks up by name only, never as YAML paths (the web's workers pass this)",
    )
    p.add_argument("--num-fewshot", type=int, default=None, help="override every task's num_fewshot")
    p.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="sequences per forward pass (as lm-eval's --batch_size; with prefix sharing, distinct contexts)",
    )
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N documents of each task")
    p.add_argument(
        "--fewshot-seed", type=int, default=1234, help="seed of the few-shot sampler (lm-eval: 1234)"
    )
    p.add_argument(
        "--bootstrap-iters", type=int, default=100000, help="bootstrap resamples for stderrs; 0 skips"
    )
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--no-prefix-sharing", action="store_true", help="score every request on its own")
    p.add_argument("--no-samples", action="store_true", help="leave per-sample records out of the output")
    p.add_argument("--output", help="where to write the results JSON (default: stdout)")
    p.add_argument("--list-tasks", action="store_true", help="print the known tasks and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    return p


def _emit(event: dict[str, Any]) -> None:
    sys.stderr.write(json.dumps(event, default=str) + "\n")
    sys.stderr.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.list_tasks:
            for name, path in sorted(discover_tasks(args.tasks_dir).items()):
                print(f"{name}\t{path}")
            return 0
        if not args.model or not args.tasks:
            raise ValueError("--model and --tasks are required")
        if args.num_fewshot is not None and args.num_fewshot < 0:
            raise ValueError("--num-fewshot: must be at least 0")
        if args.limit is not None and args.limit < 1:
            raise ValueError("--limit: must be at least 1")
        configs = resolve_tasks(
            [t.strip() for t in args.tasks.split(",") if t.strip()], args.tasks_dir, args.registry_only
        )
        # Heavy imports only once the arguments are known to be good.
        from modelcore.evaluation.lm import load_model
        from modelcore.evaluation.runner import EvalSettings, evaluate

        model = load_model(args.model, step=args.step, device=args.device, dtype=args.dtype)
        settings = EvalSettings(
            batch_size=args.batch_size,
            num_fewshot=args.num_fewshot,
            limit=args.limit,
            fewshot_seed=args.fewshot_seed,
            bootstrap_iters=args.bootstrap_iters,
            share_prefix=not args.no_prefix_sharing,
            log_samples=not args.no_samples,
        )
        results = evaluate(model, configs, settings, callback=None if args.quiet else _emit)
    except (TaskConfigError, ValueError, FileNotFoundError) as exc:
        _emit({"event": "error", "error": str(exc)})
        print(f"error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(results, indent=2, default=str, ensure_ascii=False)
    if args.output:
        out = Path(args.output)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)  # a reader never sees a half-written file
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
