"""Build a task's first request the way an evaluation would, without a model: the upload's check.

    python -m modelcore.evaluation.preview [--max-memory-mb N] TASK.yaml [TASK.yaml ...]

prints one JSON line per file, in order, as soon as it is done:
``{"file": ..., "task": ..., "prompt": ..., "error": null}`` or with ``"error"`` the
message (file, task and key named, as the evaluator would fail). Documents are read and
the first one goes through every template the task uses (``description``, ``doc_to_text``,
``doc_to_target``, ``doc_to_choice`` and, with one example, their few-shot variants).

Templates render in Jinja's sandbox (``prompts``), which bounds what a template can
reach but not what it costs (``range`` loops, huge strings). So uploads run this in its
own process: it caps its own address space (``--max-memory-mb``) and the caller kills it
after a time limit. It never imports torch.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from typing import Any

from modelcore.evaluation.documents import CORPUS_DATASET, load_splits
from modelcore.evaluation.prompts import fewshot_pool
from modelcore.evaluation.runner import EvalSettings, build_docs
from modelcore.evaluation.taskconfig import TaskConfigError, load_task_config


def preview_task(path: str) -> dict[str, Any]:
    """The first document's prompt for the task in ``path``, or the error an evaluation would stop on."""
    out: dict[str, Any] = {"file": path, "task": None, "prompt": None, "error": None}
    try:
        cfg = load_task_config(path)
        out["task"] = cfg.task
        if cfg.dataset_path == CORPUS_DATASET:
            # Its documents are pieces of the built-in corpus, {"text": ...}; reading the corpus
            # would load torch (modelcore.data) for nothing a template could get wrong.
            splits = {"test": [{"text": "A held-out piece of the training corpus."}]}
        else:
            splits = load_splits(cfg)
        pool, _ = fewshot_pool(cfg, splits)
        # One example when the task has somewhere to draw it from, so few-shot templates render too
        # (two documents at least: the question itself may be left out of its own examples).
        settings = EvalSettings(limit=1, num_fewshot=1 if pool and len(pool) > 1 else None)
        docs, _, _ = build_docs(cfg, settings, splits=splits)
        out["prompt"] = docs[0].prompt if docs else None
    except TaskConfigError as exc:
        out["error"] = str(exc)
    except MemoryError:
        out["error"] = f"{path}: ran out of memory reading the documents or rendering the templates"
    except Exception as exc:  # a data file the readers choke on: still the upload's fault, reported
        out["error"] = f"{path}: {type(exc).__name__}: {exc}"
    return out


def _cap_memory(megabytes: int) -> None:
    limit = megabytes * 1024 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m modelcore.evaluation.preview", description=__doc__)
    p.add_argument("files", nargs="+", help="task YAML files")
    p.add_argument(
        "--max-memory-mb", type=int, default=0, help="address-space cap for this process (0: none)"
    )
    args = p.parse_args(argv)
    if args.max_memory_mb > 0:
        _cap_memory(args.max_memory_mb)
    for path in args.files:
        print(json.dumps(preview_task(path), default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
