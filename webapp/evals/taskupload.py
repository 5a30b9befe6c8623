"""Install an uploaded task folder (a zip of lm-eval YAML files and their data) into a project.

The archive is only ever read as data: size- and count-limited, every member
checked before anything is written (no absolute paths, no '..', no links, only
YAML and data file types), extracted into a fresh folder inside the project's
task folder, and every task in it parsed by the engine's own loader (which never
runs ``!function`` hooks) so a bad YAML is refused at upload with the key named.
Task names must be names (the registry key jobs are looked up by), and each task's
first document is rendered through its templates in the engine's sandbox, in a
separate process with a time and memory limit (``modelcore.evaluation.preview``),
so a template that reaches for Python internals, or never finishes, is refused here
rather than when a job runs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import uuid
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

import yaml
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser

import modelcore
from modelcore.evaluation.taskconfig import (
    BUILTIN_TASKS_DIR,
    TaskConfigError,
    check_task_name,
    discover_tasks,
    load_task_config,
)
from webapp.audit.models import Action
from webapp.audit.services import record_action
from webapp.evals.sources import inside, project_tasks_dir
from webapp.input_errors import InputError
from webapp.projects.models import Project

ALLOWED_SUFFIXES = {".yaml", ".yml", ".json", ".jsonl", ".csv", ".parquet", ".arrow", ".txt", ".md"}
FILE_FORMATS = ("json", "csv", "parquet")
CORPUS_DATASET = "runwright-corpus"
MAX_MEMBERS = 500
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class TaskUploadError(InputError):
    """The upload cannot be installed; the message says what to fix (about the form's ``archive``)."""

    def __init__(self, message: str):
        super().__init__({"archive": message}, message=message)


def max_upload_bytes() -> int:
    return int(getattr(settings, "EVAL_TASK_UPLOAD_MAX_BYTES", 20 * 1024 * 1024))


def max_unpacked_bytes() -> int:
    return int(getattr(settings, "EVAL_TASK_UNPACKED_MAX_BYTES", 200 * 1024 * 1024))


def preview_seconds() -> float:
    """How long the upload's task check may render first documents before it is stopped."""
    return float(getattr(settings, "EVAL_TASK_PREVIEW_SECONDS", 30))


def preview_memory_mb() -> int:
    return int(getattr(settings, "EVAL_TASK_PREVIEW_MEMORY_MB", 2048))


def install_task_zip(
    project: Project, upload: IO[bytes], filename: str, size: int, *, actor: AbstractBaseUser | None = None
) -> list[str]:
    """Validate and install the zip; returns the task names it provides. Raises TaskUploadError.

    The install is recorded in the team's audit log (``actor``: who uploaded it).
    """
    if size > max_upload_bytes():
        raise TaskUploadError(
            f"the zip is {size / 1e6:.1f} MB; the limit is {max_upload_bytes() / 1e6:.0f} MB"
        )
    try:
        archive = zipfile.ZipFile(upload)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TaskUploadError(f"not a zip file ({exc})") from None
    with archive:
        members = _checked_members(archive)
        strip = _common_top_folder(members)
        folder_name = _folder_name(strip or Path(filename).stem)
        root = project_tasks_dir(project)
        root.mkdir(parents=True, exist_ok=True)
        staging = root / f".incoming-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            for info in members:
                rel = PurePosixPath(info.filename).parts[1 if strip else 0 :]
                if not rel:
                    continue
                target = staging.joinpath(*rel)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                _extract(archive, info, target)
            names = _validate_tasks(staging, project)
            destination = root / folder_name
            old = root / f".old-{uuid.uuid4().hex}"
            if destination.exists():
                destination.rename(old)
            staging.rename(destination)
            shutil.rmtree(old, ignore_errors=True)
            record_action(
                team=project.team_id,
                actor=actor,
                action=Action.TASKS_UPLOADED,
                target=project,
                details={"folder": folder_name, "tasks": names[:50]},
            )
            return names
        finally:
            shutil.rmtree(staging, ignore_errors=True)


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path) -> None:
    """Copy one member out; a corrupt, encrypted or oddly compressed member is the upload's fault."""
    try:
        with archive.open(info) as src, open(target, "xb") as dst:
            shutil.copyfileobj(src, dst)
    except FileExistsError:
        raise TaskUploadError(f"{info.filename}: the zip holds this file twice") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as exc:
        raise TaskUploadError(f"{info.filename}: cannot be unpacked ({exc})") from None


def _checked_members(archive: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
    members = archive.infolist()
    if len(members) > MAX_MEMBERS:
        raise TaskUploadError(f"the zip holds {len(members)} entries; at most {MAX_MEMBERS} are allowed")
    total = 0
    for info in members:
        name = info.filename
        parts = PurePosixPath(name).parts
        if name.startswith(("/", "\\")) or ".." in parts or ":" in name or "\\" in name:
            raise TaskUploadError(f"{name}: paths must stay inside the folder")
        if any(ord(c) < 32 or ord(c) == 127 for c in name):
            raise TaskUploadError(f"{name!r}: file names may not hold control characters")
        mode = info.external_attr >> 16
        if stat.S_ISLNK(mode):
            raise TaskUploadError(f"{name}: links are not allowed")
        if parts and parts[0] == "__MACOSX":
            continue
        if not info.is_dir() and PurePosixPath(name).suffix.lower() not in ALLOWED_SUFFIXES:
            allowed = ", ".join(sorted(ALLOWED_SUFFIXES))
            raise TaskUploadError(f"{name}: only task YAML and data files are accepted ({allowed})")
        total += info.file_size
    if total > max_unpacked_bytes():
        raise TaskUploadError(
            f"the zip unpacks to {total / 1e6:.0f} MB; the limit is {max_unpacked_bytes() / 1e6:.0f} MB"
        )
    kept = [m for m in members if PurePosixPath(m.filename).parts[:1] != ("__MACOSX",)]
    if not any(PurePosixPath(m.filename).suffix.lower() in (".yaml", ".yml") for m in kept):
        raise TaskUploadError("the zip holds no task YAML file")
    return kept


def _common_top_folder(members: list[zipfile.ZipInfo]) -> str | None:
    """The single folder every member sits in (a zipped folder), or None for a flat zip."""
    tops = {PurePosixPath(m.filename).parts[0] for m in members if PurePosixPath(m.filename).parts}
    if len(tops) == 1:
        top = next(iter(tops))
        if all(len(PurePosixPath(m.filename).parts) > 1 or m.is_dir() for m in members):
            return top
    return None


def _folder_name(raw: str) -> str:
    name = _SAFE_NAME.sub("_", raw).strip("._") or "tasks"
    return name[:80]


def _validate_tasks(folder: Path, project: Project) -> list[str]:
    builtin = set(discover_tasks([]))
    names = []
    task_files = []
    for path in sorted([*folder.rglob("*.yaml"), *folder.rglob("*.yml")]):
        rel = path.relative_to(folder).as_posix()
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.constructor.ConstructorError:
            data = None  # a !function tag: the engine's loader reports it below, naming the key
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise TaskUploadError(f"{rel}: not valid YAML ({exc})") from None
        if isinstance(data, dict):
            _check_paths(folder, path, rel, data)
        if data is not None and not (isinstance(data, dict) and isinstance(data.get("task"), str)):
            continue  # a base file for include:, checked through the tasks that include it
        try:
            cfg = load_task_config(path)
            check_task_name(cfg.task, f"{rel}: task")
        except TaskConfigError as exc:
            raise TaskUploadError(_relative(str(exc), folder)) from None
        if cfg.task in builtin:
            raise TaskUploadError(
                f"{rel}: task: {cfg.task!r} is a built-in task; give the upload another name"
            )
        _check_paths(
            folder, path, rel, {"dataset_path": cfg.dataset_path, "dataset_kwargs": cfg.dataset_kwargs}
        )
        names.append(cfg.task)
        task_files.append(path)
    if not names:
        raise TaskUploadError("no YAML file in the zip has a task: key")
    if len(set(names)) != len(names):
        raise TaskUploadError("two YAML files define the same task name")
    assert not inside(BUILTIN_TASKS_DIR, folder)
    _render_first_documents(folder, task_files)
    return names


def _relative(message: str, folder: Path) -> str:
    """An engine message with the staging folder taken out (the user knows only the zip's paths)."""
    for prefix in {str(folder.resolve()) + "/", str(folder) + "/"}:
        message = message.replace(prefix, "")
    return message


def _render_first_documents(folder: Path, task_files: list[Path]) -> None:
    """Render each task's first document as an evaluation would, in a separate, limited process.

    The templates render in the engine's sandbox; the process bounds time and memory, which the
    sandbox does not (a template may loop or build huge strings), and keeps the web process free
    of the data readers. Its environment holds no secrets of the web process.
    """
    root = Path(modelcore.__file__).resolve().parent.parent
    argv = [sys.executable, "-m", "modelcore.evaluation.preview", "--max-memory-mb", str(preview_memory_mb())]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(root),
        "LANG": "C.UTF-8",
        "OPENBLAS_NUM_THREADS": "1",  # each BLAS thread reserves address space under the cap
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    try:
        done = subprocess.run(
            [*argv, *map(str, task_files)],
            cwd=folder,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=preview_seconds(),
        )
        lines, failed = done.stdout.splitlines(), done.returncode != 0
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else exc.stdout or ""
        lines, failed = out.splitlines(), True
    reports = []
    for line in lines:
        try:
            reports.append(json.loads(line))
        except ValueError:
            continue
    for report in reports:
        if report.get("error"):
            raise TaskUploadError(_relative(str(report["error"]), folder))
    if failed or len(reports) < len(task_files):
        stuck = task_files[min(len(reports), len(task_files) - 1)].relative_to(folder).as_posix()
        raise TaskUploadError(
            f"{stuck}: rendering the first document's prompt did not finish within "
            f"{preview_seconds():.0f} s and {preview_memory_mb()} MB; simplify the templates "
            "(loops, repeated strings) or the data files"
        )


def _check_paths(folder: Path, yaml_path: Path, rel: str, data: dict) -> None:
    """Every file a task reads must lie inside the uploaded folder."""

    def check(key: str, value: object) -> None:
        if not isinstance(value, str):
            return
        p = Path(value)
        if p.is_absolute() or ".." in p.parts or value.startswith("~"):
            raise TaskUploadError(f"{rel}: {key}: {value!r} must be a path inside the uploaded folder")
        if not inside(folder, yaml_path.parent / p):
            raise TaskUploadError(f"{rel}: {key}: {value!r} points outside the uploaded folder")

    check("include", data.get("include"))
    dataset_path = data.get("dataset_path")
    if isinstance(dataset_path, str) and dataset_path not in FILE_FORMATS and dataset_path != CORPUS_DATASET:
        check("dataset_path", dataset_path)
    kwargs = data.get("dataset_kwargs")
    if not isinstance(kwargs, dict):
        return
    if dataset_path == CORPUS_DATASET and "corpus" in kwargs:
        raise TaskUploadError(f"{rel}: dataset_kwargs.corpus: uploaded tasks use the built-in corpus only")
    files = kwargs.get("data_files")
    if isinstance(files, str | list):
        files = {"_": files}
    if isinstance(files, dict):
        for split, value in files.items():
            for item in value if isinstance(value, list) else [value]:
                check(
                    f"dataset_kwargs.data_files.{split}" if split != "_" else "dataset_kwargs.data_files",
                    item,
                )
