"""Where models and tasks for eval jobs come from, resolved inside the data directory.

- Run checkpoints: ``RUNS_DIR/<run id>/checkpoints/step_XXXXXX`` (recorded as Checkpoint rows).
- Hugging Face directories: folders with a ``config.json`` under the shared models
  folder (``EVAL_MODELS_DIR``, default ``DATA_DIR/models``), put there by an admin.
  Users pick them by relative path; nothing outside that folder is accepted, so a
  path can never reach another team's run directory.
- Tasks: the engine's built-in tasks, the shared tasks folder (``EVAL_TASKS_DIR``,
  default ``DATA_DIR/tasks``) and the task folders uploaded to the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from modelcore.evaluation.taskconfig import BUILTIN_TASKS_DIR, TaskConfigError, discover_tasks
from webapp.projects.models import Project

MAX_MODEL_DEPTH = 3


def models_dir() -> Path:
    return Path(getattr(settings, "EVAL_MODELS_DIR", Path(settings.DATA_DIR) / "models"))


def shared_tasks_dir() -> Path:
    return Path(getattr(settings, "EVAL_TASKS_DIR", Path(settings.DATA_DIR) / "tasks"))


def project_tasks_dir(project: Project | int) -> Path:
    project_id = project if isinstance(project, int) else project.id
    return Path(settings.DATA_DIR) / "task_uploads" / f"project_{project_id}"


def inside(root: Path, candidate: Path) -> bool:
    """Whether ``candidate`` (symlinks resolved) lies inside ``root``."""
    try:
        candidate.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return True


def hf_model_dirs() -> list[str]:
    """Relative paths of Hugging Face model folders under the shared models folder."""
    root = models_dir()
    if not root.is_dir():
        return []
    found = []
    for config in sorted(root.rglob("config.json")):
        rel = config.parent.relative_to(root)
        if len(rel.parts) <= MAX_MODEL_DEPTH and inside(root, config.parent):
            found.append(rel.as_posix() or ".")
    return found


def resolve_hf_dir(relative: str) -> Path:
    """The absolute folder for a user-given relative path; ValueError unless it is a model folder inside."""
    relative = (relative or "").strip()
    if not relative:
        raise ValueError("give the model folder's path inside the models folder")
    if Path(relative).is_absolute() or ".." in Path(relative).parts:
        raise ValueError("must be a path inside the models folder, without '..'")
    root = models_dir()
    path = root / relative
    if not inside(root, path):
        raise ValueError("must stay inside the models folder (a link points elsewhere)")
    if not (path / "config.json").is_file():
        raise ValueError(f"{relative}: no Hugging Face model here (config.json is missing)")
    return path.resolve()


def task_dirs(project: Project | int) -> list[Path]:
    """Extra task folders the evaluator gets with --tasks-dir (later ones win on a name clash)."""
    return [d for d in (shared_tasks_dir(), project_tasks_dir(project)) if d.is_dir()]


@dataclass(frozen=True)
class TaskInfo:
    name: str
    origin: str  # "built-in", "shared" or "uploaded"
    path: Path


def available_tasks(project: Project | int) -> list[TaskInfo]:
    dirs = task_dirs(project)
    try:
        found = discover_tasks(dirs)
    except TaskConfigError:
        found = discover_tasks([])
    out = []
    for name, path in sorted(found.items()):
        if inside(BUILTIN_TASKS_DIR, path):
            origin = "built-in"
        elif inside(project_tasks_dir(project), path):
            origin = "uploaded"
        else:
            origin = "shared"
        out.append(TaskInfo(name, origin, path))
    return out
