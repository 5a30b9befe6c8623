"""What a run config submitted through the web or the API may name as a file or folder.

The trainer's CLI trusts its caller and reads any path. The web does not trust its
users: a path field (every config field carrying a ``PathSpec`` in
``modelcore.config``, so a field added later is covered) may name only

- one of the field's built-in values (``stdlib``, ``byte``, empty, ...);
- ``"dataset"``: a file or folder under the operator's dataset roots (``DATASET_DIRS``);
- ``"model"``: a Hugging Face folder under the models folder (``MODELS_DIR``);
- ``"run"``: a run (``run:<id>``, its latest checkpoint) or one checkpoint
  (``run:<id>:<step>``) of a project the user can see, never a path into the runs folder.

Symlinks and ``..`` are resolved before each containment check. ``check_submitted``
runs in ``create_run`` and replaces each value by the real path the trainer reads;
``check_stored`` runs in the worker before launch, so a stored config changed behind
the web's back (or a root an operator has since removed) fails the run unlaunched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

from modelcore.config import ConfigError, PathSpec, RunConfig, field_schema
from webapp.evals.sources import hf_model_dirs, inside, models_dir, resolve_hf_dir
from webapp.runs.models import Run
from webapp.runs.selectors import runs_visible_to

SOURCES = ("dataset", "model", "run")
# ASCII digits only, and few enough that the id fits a 64-bit column.
RUN_REFERENCE = re.compile(r"run:([0-9]{1,18})(?::([0-9]{1,18}))?")
CHECKPOINT_DIR = re.compile(r"step_[0-9]+")
# The form offers at most this many datasets and runs; anything else can still be typed.
MAX_CHOICES = 300
DATASET_DEPTH = 2


@dataclass(frozen=True)
class PathField:
    path: str  # "data.corpus"
    spec: PathSpec

    def value(self, config: RunConfig) -> str:
        section, name = self.path.split(".")
        return getattr(getattr(config, section), name)


def path_fields() -> list[PathField]:
    """Every config field that names a file, from the schema's markers."""
    return [
        PathField(meta["path"], meta["path_spec"])
        for section in field_schema()
        for meta in section["fields"]
        if meta["path_spec"] is not None
    ]


def dataset_roots() -> list[Path]:
    return [Path(root).resolve() for root in settings.DATASET_DIRS]


def runs_root() -> Path:
    return Path(settings.RUNS_DIR).resolve()


# --- at submit time ---------------------------------------------------------------


def check_submitted(config: RunConfig, user: AbstractBaseUser) -> RunConfig:
    """``config`` with every path field replaced by the real path it names for ``user``.

    Raises ``ConfigError`` keyed by field path, saying what the field may name.
    """
    errors: dict[str, str] = {}
    concrete: dict[str, dict[str, Any]] = {}
    for field in path_fields():
        value = field.value(config)
        if value in field.spec.builtins:
            continue
        try:
            path = _resolve_submitted(field.spec, value, user)
        except ValueError as exc:
            errors[field.path] = f"{exc}; {allowed(field.spec)}"
            continue
        section, name = field.path.split(".")
        concrete.setdefault(section, {})[name] = str(path)
    if errors:
        raise ConfigError(errors)
    return RunConfig.from_dict(concrete, base=config) if concrete else config


def _resolve_submitted(spec: PathSpec, value: str, user: AbstractBaseUser) -> Path:
    if "run" in spec.sources and value.startswith("run:"):
        return _resolve_run_reference(value, user)
    if "run" in spec.sources and inside(runs_root(), Path(value)):
        raise ValueError(f"{value!r}: runs are named by reference, not by path")
    resolvers = []
    if "dataset" in spec.sources:
        resolvers.append(_resolve_dataset)
    if "model" in spec.sources:
        resolvers.append(lambda v: resolve_hf_dir(v, model_file=spec.model_file))
    first_error: ValueError | None = None
    for resolve in resolvers:
        try:
            return resolve(value)
        except ValueError as exc:
            first_error = first_error or exc
    raise first_error or ValueError(f"{value!r} is not allowed")


def _resolve_run_reference(value: str, user: AbstractBaseUser) -> Path:
    match = RUN_REFERENCE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r}: a run reference is run:<id> or run:<id>:<step>")
    run_id, step = int(match[1]), match[2]
    # Another team's run reads as missing, as a URL to it would.
    run = runs_visible_to(user).filter(pk=run_id).first()
    if run is None:
        raise ValueError(f"{value!r}: there is no run {run_id} that you can see")
    checkpoints = run.checkpoints.order_by("step")
    if step is None:
        if not checkpoints.exists():
            raise ValueError(f"{value!r}: run {run_id} has no checkpoint yet")
        # The trainer starts from the run's latest checkpoint at launch (modelcore.init_from).
        return run.run_dir.resolve()
    checkpoint = checkpoints.filter(step=int(step)).first()
    if checkpoint is None:
        steps = ", ".join(str(s) for s in checkpoints.values_list("step", flat=True)[:20]) or "none"
        raise ValueError(f"{value!r}: run {run_id} has no checkpoint at step {step} (it has: {steps})")
    path = (run.run_dir / checkpoint.path).resolve()
    if not inside(run.run_dir, path):
        raise ValueError(f"{value!r}: the checkpoint's folder lies outside its run")
    return path


def _resolve_dataset(value: str) -> Path:
    roots = dataset_roots()
    if not value.strip():
        raise ValueError("must not be empty")
    # A relative value is looked up in each root in turn; an absolute one replaces the root.
    candidates = [(root / value).resolve() for root in roots]
    contained = [c for c in candidates if _in_datasets(roots, c)]
    if not contained:
        raise ValueError(f"{value!r} lies outside the dataset folders (links and '..' are followed)")
    found = next((c for c in contained if c.exists()), None)
    if found is None:
        raise ValueError(f"{value!r}: no such file or folder in the dataset folders")
    escaped = next(_links_leaving(found, roots), None)
    if escaped is not None:
        raise ValueError(f"{value!r}: {escaped} links outside the dataset folders")
    return found


def _inside_any(roots: Sequence[Path], path: Path) -> bool:
    return any(inside(root, path) for root in roots)


def _in_datasets(roots: Sequence[Path], path: Path) -> bool:
    # Never the runs folder, even under a dataset root an operator drew too wide (DATA_DIR).
    return _inside_any(roots, path) and not inside(runs_root(), path)


def _links_leaving(folder: Path, roots: Sequence[Path]) -> Iterator[Path]:
    """Entries under ``folder`` whose real path leaves ``roots`` (the trainer reads a folder whole)."""
    if not folder.is_dir():
        return
    seen: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen:  # a link loop, or a folder reached twice
            dirnames[:] = []
            continue
        seen.add(real)
        for name in [*dirnames, *filenames]:
            entry = Path(dirpath, name)
            if entry.is_symlink() and not _in_datasets(roots, entry):
                yield entry
        dirnames[:] = [d for d in dirnames if _in_datasets(roots, Path(dirpath, d))]


def allowed(spec: PathSpec) -> str:
    """What a field may name, for its error message."""
    options = [repr(b) if b else "empty" for b in spec.builtins]
    if "dataset" in spec.sources:
        roots = ", ".join(str(r) for r in settings.DATASET_DIRS)
        options.append(f"a file or folder in the dataset folders ({roots})")
    if "model" in spec.sources:
        options.append(f"a Hugging Face folder with {spec.model_file} in the models folder ({models_dir()})")
    if "run" in spec.sources:
        options.append("a run you can see as run:<id> (its latest checkpoint) or run:<id>:<step>")
    return "allowed: " + ", ".join(options)


# --- the form's choices -------------------------------------------------------------


def choices_for(spec: PathSpec, user: AbstractBaseUser) -> list[tuple[str, str]]:
    """(value, label) pairs the new-run form offers for a path field."""
    out = [(b, "built-in") for b in spec.builtins if b]
    if "dataset" in spec.sources:
        out += [(str(p), "dataset") for p in dataset_choices()]
    if "model" in spec.sources:
        out += [(rel, "model folder") for rel in hf_model_dirs(spec.model_file)]
    if "run" in spec.sources:
        out += run_choices(user)
    return out


def dataset_choices() -> list[Path]:
    """Files and folders near the top of each dataset root, as the real paths a config stores."""
    roots = dataset_roots()
    found: list[Path] = []
    for root in roots:
        if not root.is_dir():
            continue
        for dirpath, dirnames, filenames in os.walk(root):
            names = sorted(n for n in [*dirnames, *filenames] if not n.startswith("."))
            depth = len(Path(dirpath).relative_to(root).parts)
            dirnames[:] = (
                sorted(d for d in dirnames if not d.startswith(".")) if depth + 1 < DATASET_DEPTH else []
            )
            for name in names:
                entry = Path(dirpath, name)
                if _in_datasets(roots, entry):
                    found.append(entry.resolve())
                if len(found) >= MAX_CHOICES:
                    return found
    return found


def run_choices(user: AbstractBaseUser) -> list[tuple[str, str]]:
    """The newest runs with a checkpoint that ``user`` can see, as ``run:<id>`` references."""
    runs = runs_visible_to(user).filter(checkpoints__isnull=False).distinct().order_by("-created_at", "-id")
    return [
        (f"run:{run.id}", f"{run.name} · {run.project.name} (latest checkpoint)")
        for run in runs[:MAX_CHOICES]
    ]


# --- before launch (the worker) -----------------------------------------------------


def check_stored(run: Run, config: RunConfig) -> None:
    """Raise ``ConfigError`` unless every path in the run's stored config is one the web could have written.

    The web stores real paths: under the dataset roots, the models folder, or the run
    folder (or a checkpoint folder) of a run that the run's creator can still see.
    """
    errors: dict[str, str] = {}
    for field in path_fields():
        value = field.value(config)
        if value in field.spec.builtins:
            continue
        problem = _stored_problem(field.spec, Path(value), run)
        if problem:
            errors[field.path] = f"{value!r} {problem}; {allowed(field.spec)}"
    if errors:
        raise ConfigError(errors)


def _stored_problem(spec: PathSpec, path: Path, run: Run) -> str:
    if not path.is_absolute():
        return "is not a real path written by the web"
    if "dataset" in spec.sources and _in_datasets(dataset_roots(), path):
        escaped = next(_links_leaving(path.resolve(), dataset_roots()), None)
        return f"holds {escaped}, which links outside the dataset folders" if escaped else ""
    if "model" in spec.sources and inside(models_dir(), path):
        return ""
    if "run" in spec.sources and inside(runs_root(), path):
        return _stored_run_problem(path.resolve(), run)
    return "lies outside what a config submitted through the web may name"


def _stored_run_problem(path: Path, run: Run) -> str:
    parts = path.relative_to(runs_root()).parts
    is_run = len(parts) == 1
    is_checkpoint = len(parts) == 3 and parts[1] == "checkpoints" and CHECKPOINT_DIR.fullmatch(parts[2])
    if not parts or not parts[0].isascii() or not parts[0].isdigit() or not (is_run or is_checkpoint):
        return "is not a run folder or one of its checkpoints"
    source = Run.objects.filter(pk=int(parts[0])).select_related("project").first()
    if source is None:
        return f"names run {parts[0]}, which no longer exists"
    if run.created_by is not None:
        visible = runs_visible_to(run.created_by).filter(pk=source.pk).exists()
    else:  # the creator's account is gone: keep to the run's own team
        visible = source.project.team_id == run.project.team_id
    return "" if visible else f"names run {source.pk}, which this run's creator cannot see"
