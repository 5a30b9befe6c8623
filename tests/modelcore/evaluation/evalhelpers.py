"""Data helpers shared by the evaluator tests."""

from __future__ import annotations

import json
from pathlib import Path

from modelcore.evaluation.taskconfig import BUILTIN_TASKS_DIR


def builtin_rows(task_folder: str, split: str) -> list[dict]:
    path = BUILTIN_TASKS_DIR / task_folder / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
