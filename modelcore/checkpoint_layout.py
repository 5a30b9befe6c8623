"""Where a run's checkpoints live on disk, readable without torch (the workers list them too).

``RUN_DIR/checkpoints/step_XXXXXX/``; a folder is complete once ``meta.json`` is in it
(the trainer writes into ``step_XXXXXX.tmp`` and renames it). ``modelcore.checkpoint``
owns what is inside a folder (the sharded ``state/`` subfolder, one file per rank, or the
``model.safetensors`` of older checkpoints); everything outside the engine treats a folder
whole: pruning deletes it, the checkpoints panel sums its files' sizes (subfolders
included), a download tars all of it, an eval or sample job names it by step.
"""

from __future__ import annotations

from pathlib import Path

CHECKPOINTS_DIR = "checkpoints"


def checkpoint_name(step: int) -> str:
    return f"step_{step:06d}"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints of a run as (step, path), oldest first."""
    root = Path(run_dir) / CHECKPOINTS_DIR
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith("step_") and p.name[5:].isdigit() and (p / "meta.json").exists():
            found.append((int(p.name[5:]), p))
    return sorted(found)
