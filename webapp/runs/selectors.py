"""Runs as one user may see them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import QuerySet
from django.http import Http404

from webapp.metrics.models import MetricPoint
from webapp.projects.models import Project
from webapp.projects.selectors import projects_visible_to
from webapp.runs.models import Checkpoint, Run, RunLog, RunSample


def runs_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Run]:
    return Run.objects.filter(project__in=projects_visible_to(user)).select_related(
        "project", "project__team"
    )


def run_for(user: AbstractBaseUser | AnonymousUser, run_id: int) -> Run:
    """The run if ``user`` may see it; another team's run raises Http404."""
    run = runs_visible_to(user).filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    return run


def project_runs(
    user: AbstractBaseUser | AnonymousUser, project: Project, *, include_archived: bool = False
) -> QuerySet[Run]:
    """The project's runs ``user`` sees, newest first; archived ones only when asked for.

    The runs table and the API list filter this further (``webapp.runs.filters``).
    """
    runs = runs_visible_to(user).filter(project=project)
    if not include_archived:
        runs = runs.filter(archived=False)
    return runs.order_by("-created_at", "-id")


def runs_of_project(
    user: AbstractBaseUser | AnonymousUser, project: Project, limit: int = 200
) -> QuerySet[Run]:
    return project_runs(user, project)[:limit]


def log_tail(run: Run, limit: int = 200) -> list[RunLog]:
    """The last ``limit`` log lines, oldest first."""
    return list(reversed(RunLog.objects.filter(run=run).order_by("-seq")[:limit]))


def samples_table(run: Run, last_steps: int = 8) -> dict[str, Any]:
    """The run's samples as a table: a row per prompt, a column per step (the last ``last_steps``).

    ``{"steps": [10, 20], "rows": [{"prompt": "def ", "texts": ["…", "…"]}]}``; a cell is ""
    where that step has no text for that prompt (a prompt added by a restart).
    """
    steps = list(
        RunSample.objects.filter(run=run)
        .values_list("step", flat=True)
        .distinct()
        .order_by("-step")[:last_steps]
    )
    steps.reverse()
    cells: dict[tuple[int, int], str] = {}
    prompts: dict[int, str] = {}
    for step, index, prompt, text in RunSample.objects.filter(run=run, step__in=steps).values_list(
        "step", "index", "prompt", "text"
    ):
        cells[(index, step)] = text
        prompts[index] = prompt  # the latest step's wording wins (ordered by step)
    rows = [
        {"prompt": prompts[i], "texts": [cells.get((i, step), "") for step in steps]} for i in sorted(prompts)
    ]
    return {"steps": steps, "rows": rows}


VAL_LOSS_KEY = "val/loss"
# The run's own files a viewer may download, by the name the page shows (and the URL carries).
RUN_FILES = ("config.json", "events.jsonl", "launcher.log")
FAILURES_DIR = "failures"  # modelcore.train: each failed rank's traceback, rank<N>.txt
# Each Slurm job's output (workers.slurm: sbatch --output/--error in the run directory).
SLURM_OUTPUT = re.compile(r"slurm-(\d{1,20})\.(out|err)")


def contained(run: Run, relative: str) -> Path | None:
    """``relative`` under the run directory, or None when it leads out of it (``..``, a link out)."""
    root = run.run_dir.resolve()
    path = (root / relative).resolve()
    return path if path.is_relative_to(root) and path != root else None


def run_files(run: Run) -> list[dict[str, Any]]:
    """The run's files that exist: config, events, the launcher's log (every rank's output), and
    the traceback each failed rank left; ``name`` is what a download asks for."""
    names = list(RUN_FILES)
    failures = run.run_dir / FAILURES_DIR
    if failures.is_dir():
        names += sorted(f"{FAILURES_DIR}/{p.name}" for p in failures.glob("rank*.txt"))
    if run.slurm_job_id:
        names += sorted(p.name for p in run.run_dir.glob("slurm-*") if SLURM_OUTPUT.fullmatch(p.name))
    out = []
    for name in names:
        path = contained(run, name)
        if path is not None and path.is_file():
            out.append({"name": name, "size": path.stat().st_size})
    return out


def slurm_job(run: Run) -> dict[str, Any] | None:
    """The current attempt's Slurm job for the run page: id, state, why it waits, its output files."""
    if not run.slurm_job_id:
        return None
    present = {f["name"] for f in run_files(run)}
    return {
        "id": run.slurm_job_id,
        "state": run.slurm_state,
        "reason": run.slurm_reason,
        "stdout": name if (name := f"slurm-{run.slurm_job_id}.out") in present else "",
        "stderr": name if (name := f"slurm-{run.slurm_job_id}.err") in present else "",
    }


def run_file(run: Run, name: str) -> Path | None:
    """The file ``name`` of the run (one that ``run_files`` lists), or None."""
    if name not in {f["name"] for f in run_files(run)}:
        return None
    return contained(run, name)


def checkpoint_dir(run: Run, step: int) -> Path | None:
    """The folder of the run's kept checkpoint at ``step``, or None (none, pruned, or gone from disk)."""
    ckpt = Checkpoint.objects.filter(run=run, step=step).first()
    if ckpt is None:
        return None
    path = contained(run, ckpt.path)
    return path if path is not None and path.is_dir() else None


def checkpoints_panel(run: Run) -> list[dict[str, Any]]:
    """Every checkpoint the run saved, newest first: step, time, size on disk, the validation
    loss logged at that step, and whether keep_last has pruned it. An external run's are listed
    with the path its client gave, which is on another machine: never looked up here."""
    rows = list(Checkpoint.every.filter(run=run).order_by("-step"))
    val = dict(
        MetricPoint.objects.filter(run=run, key=VAL_LOSS_KEY, step__in=[c.step for c in rows]).values_list(
            "step", "value"
        )
    )
    out = []
    for ckpt in rows:
        folder = None if ckpt.pruned_at or ckpt.external else contained(run, ckpt.path)
        size = _folder_bytes(folder) if folder is not None and folder.is_dir() else None
        out.append(
            {
                "step": ckpt.step,
                "saved_at": ckpt.created_at,
                "size": size,
                "val_loss": val.get(ckpt.step),
                "pruned": ckpt.pruned_at is not None,
                "on_disk": size is not None,
                "external": ckpt.external,
                "external_path": ckpt.path if ckpt.external else "",
            }
        )
    return out


def _folder_bytes(folder: Path) -> int:
    # lstat: a link's own size, never what it points to (which may be outside the run).
    return sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_symlink() and p.is_file())
