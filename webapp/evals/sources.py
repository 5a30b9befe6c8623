"""Where models and tasks for eval jobs come from, resolved inside the data directory.

- Run checkpoints: ``RUNS_DIR/<run id>/checkpoints/step_XXXXXX`` (recorded as Checkpoint rows).
- Hugging Face directories: folders with a ``config.json`` under the shared models
  folder (``MODELS_DIR``, ``DATA_DIR/models``), put there by an admin. Users pick them
  by relative path; nothing outside that folder is accepted, so a path can never
  reach another team's run directory. Run configs submitted through the web use the
  same folders (``webapp/runs/config_paths.py``).
- Tasks: the engine's built-in tasks, the shared tasks folder (``EVAL_TASKS_DIR``,
  default ``DATA_DIR/tasks``) and the task folders uploaded to the project.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

from modelcore.evaluation.taskconfig import BUILTIN_TASKS_DIR, TaskConfigError, discover_tasks, is_task_name
from webapp.projects.models import Project

MAX_MODEL_DEPTH = 3


def models_dir() -> Path:
    return Path(settings.MODELS_DIR)


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


def hf_model_dirs(model_file: str = "config.json") -> list[str]:
    """Relative paths of Hugging Face folders (holding ``model_file``) under the shared models folder."""
    root = models_dir()
    if not root.is_dir():
        return []
    found = []
    for marker in sorted(root.rglob(model_file)):
        rel = marker.parent.relative_to(root)
        if len(rel.parts) <= MAX_MODEL_DEPTH and inside(root, marker.parent):
            found.append(rel.as_posix() or ".")
    return found


def resolve_hf_dir(value: str, *, model_file: str = "config.json") -> Path:
    """The real folder a user-given model path names; ValueError unless it is a model folder inside.

    ``value`` is relative to the models folder, or absolute inside it (what a run's
    stored config holds). Symlinks and ``..`` are resolved before the containment
    check, so neither can lead to another team's run directory.
    """
    value = (value or "").strip()
    if not value:
        raise ValueError("give the model folder's path inside the models folder")
    root = models_dir()
    path = root / value  # an absolute value replaces the root
    if not inside(root, path):
        raise ValueError(f"{value}: must be a folder inside the models folder ({root})")
    if not (path / model_file).is_file():
        raise ValueError(f"{value}: no Hugging Face model here ({model_file} is missing)")
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
        if not is_task_name(name):
            # An operator's shared folder may hold a YAML whose `task:` looks like a path: choosing it
            # would only get the service's field error, so it is not offered at all.
            continue
        if inside(BUILTIN_TASKS_DIR, path):
            origin = "built-in"
        elif inside(project_tasks_dir(project), path):
            origin = "uploaded"
        else:
            origin = "shared"
        out.append(TaskInfo(name, origin, path))
    return out
