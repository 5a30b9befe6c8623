"""Writes for eval jobs and reports: create (and queue), cancel, import results, save reports.

Every function checks the role itself (members evaluate, admins delete), so a
second caller (the API, a management command) cannot forget it.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.utils import timezone

from modelcore.evaluation.taskconfig import TASK_NAME_RULE, is_task_name
from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.evals import transitions
from webapp.evals.models import EVAL_STATES, EvalJob, EvalStatus, ModelSource, Report
from webapp.evals.sources import available_tasks, resolve_hf_dir
from webapp.input_errors import InputError
from webapp.projects.models import Project
from webapp.runs.models import Checkpoint, Run
from webapp.whole_numbers import parse_whole_number

MAX_TASKS = 50
MAX_MODELS = 20
MAX_FEWSHOT = 64


@dataclass(frozen=True)
class ModelRef:
    """One model to evaluate: a run's checkpoint or a folder under the shared models folder."""

    source: str
    run_id: int | None = None
    step: int | None = None
    hf_path: str = ""

    @classmethod
    def parse(cls, value: str) -> ModelRef:
        """``ckpt:<run id>:<step>`` or ``hf:<relative path>`` (the form's choice values)."""
        kind, _, rest = (value or "").partition(":")
        if kind == "ckpt":
            # Not str.isdigit(): it passes "²" (int() then raises) and Arabic-Indic digits.
            run_text, _, step_text = rest.partition(":")
            run_id, step = parse_whole_number(run_text), parse_whole_number(step_text)
            if run_id is not None and step is not None and min(run_id, step) >= 0:
                return cls(ModelSource.CHECKPOINT, run_id=run_id, step=step)
        elif kind == "hf" and rest:
            return cls(ModelSource.HF, hf_path=rest)
        raise InputError({"models": f"{value!r} is not a model choice"})

    def value(self) -> str:
        return (
            f"ckpt:{self.run_id}:{self.step}"
            if self.source == ModelSource.CHECKPOINT
            else f"hf:{self.hf_path}"
        )


def _shown(value: str, limit: int = 60) -> str:
    """``value`` quoted for an error message, cut short (a body may carry a megabyte-long name)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _check_options(
    project: Project, tasks: Sequence[str], num_fewshot: int | None, limit: int | None
) -> list[str]:
    errors: dict[str, str] = {}
    tasks = [t.strip() for t in tasks if t and t.strip()]
    known = {t.name for t in available_tasks(project)}
    if not tasks:
        errors["tasks"] = "choose at least one task"
    elif len(tasks) > MAX_TASKS:
        errors["tasks"] = f"at most {MAX_TASKS} tasks per job"
    elif not_names := [t for t in tasks if not is_task_name(t)]:
        # Tasks are looked up by name in the registry, never read from a path a member gives.
        errors["tasks"] = (
            f"{_shown(not_names[0])} is not a task name: pick a listed task (a name has {TASK_NAME_RULE}); "
            "to run your own task, upload its folder"
        )
    else:
        unknown = [t for t in tasks if t not in known]
        if unknown:
            errors["tasks"] = f"unknown task {_shown(unknown[0])}; upload its folder or pick a listed task"
    if num_fewshot is not None and not 0 <= num_fewshot <= MAX_FEWSHOT:
        errors["num_fewshot"] = f"must be between 0 and {MAX_FEWSHOT}"
    if limit is not None and limit < 1:
        errors["limit"] = "must be at least 1 (leave empty for all samples)"
    if errors:
        raise InputError(errors)
    return list(dict.fromkeys(tasks))


def _checkpoint(project: Project, run_id: int, step: int) -> Checkpoint:
    ckpt = (
        Checkpoint.objects.filter(run_id=run_id, run__project=project, step=step)
        .select_related("run")
        .first()
    )
    if ckpt is None:
        raise InputError({"models": f"run {run_id} has no checkpoint at step {step} in this project"})
    return ckpt


def create_eval_jobs(
    *,
    user: AbstractBaseUser,
    project: Project,
    models: Iterable[ModelRef],
    tasks: Sequence[str],
    num_fewshot: int | None = None,
    limit: int | None = None,
    report_name: str = "",
) -> list[EvalJob]:
    """One queued job per model (each on all ``tasks``); optionally a report over them. Raises InputError."""
    require_role(user, project.team_id, Role.MEMBER)
    tasks = _check_options(project, tasks, num_fewshot, limit)
    models = list(dict.fromkeys(models))
    if not models:
        raise InputError({"models": "choose at least one model"})
    if len(models) > MAX_MODELS:
        raise InputError({"models": f"at most {MAX_MODELS} models at once"})
    report_name = (report_name or "").strip()
    if len(report_name) > 200:
        raise InputError({"report_name": "must be at most 200 characters"})
    rows = []
    for ref in models:
        if ref.source == ModelSource.CHECKPOINT:
            ckpt = _checkpoint(project, ref.run_id, ref.step)
            rows.append({"source": ref.source, "run": ckpt.run, "checkpoint_step": ckpt.step})
        else:
            try:
                resolve_hf_dir(ref.hf_path)
            except ValueError as exc:
                raise InputError({"models": f"{ref.hf_path}: {exc}"}) from None
            rows.append({"source": ref.source, "hf_path": ref.hf_path, "label": ref.hf_path})
    with transaction.atomic():
        jobs = [
            EVAL_STATES.create(
                EvalJob.objects,
                EvalStatus.QUEUED,
                project=project,
                tasks=tasks,
                num_fewshot=num_fewshot,
                limit=limit,
                created_by=user,
                **row,
            )
            for row in rows
        ]
        if report_name:
            report = Report.objects.create(project=project, name=report_name, created_by=user)
            report.jobs.set(jobs)
        for job in jobs:
            transitions.JOBS.send_on_commit(job.id)
    return jobs


def request_eval_cancel(*, user: AbstractBaseUser, job: EvalJob) -> EvalJob:
    """A queued job is cancelled at once; a running one by its worker within seconds."""
    require_role(user, job.project.team_id, Role.MEMBER)
    transitions.JOBS.request_cancel(job.pk)
    job.refresh_from_db()
    return job


def schedule_periodic_eval(run_id: int, step: int) -> EvalJob | None:
    """Queue the eval a run's config asks for at this checkpoint, or None when it asks for none.

    ``eval.tasks`` names the tasks; ``eval.every`` > 0 evaluates the first
    checkpoint at or after each multiple of it, 0 only the final checkpoint
    (``train.max_steps``). Safe to call twice for the same checkpoint.
    """
    run = Run.objects.filter(pk=run_id).select_related("project").first()
    if run is None:
        return None
    eval_cfg = (run.config or {}).get("eval", {})
    tasks = [t.strip() for t in str(eval_cfg.get("tasks") or "").split(",") if t.strip()]
    every = int(eval_cfg.get("every") or 0)
    max_steps = int((run.config or {}).get("train", {}).get("max_steps") or 0)
    if not tasks or not _periodic_due(run, step, every, max_steps):
        return None
    known = {t.name for t in available_tasks(run.project)}
    unknown = [t for t in tasks if t not in known]
    limit = int(eval_cfg.get("limit") or 0) or None
    try:
        with transaction.atomic():
            job = EVAL_STATES.create(
                EvalJob.objects,
                EvalStatus.QUEUED,
                project=run.project,
                source=ModelSource.CHECKPOINT,
                run=run,
                checkpoint_step=step,
                tasks=tasks,
                limit=limit,
                periodic=True,
                created_by=run.created_by,
            )
            if unknown:
                # Visible on the run's eval list instead of a silent skip.
                transitions.JOBS.fail_queued(job.pk, f"eval.tasks: unknown task {unknown[0]!r}")
            else:
                transitions.JOBS.send_on_commit(job.id)
    except IntegrityError:
        return None  # already scheduled for this checkpoint
    job.refresh_from_db()
    return job


def _periodic_due(run: Run, step: int, every: int, max_steps: int) -> bool:
    if max_steps and step >= max_steps:
        return True
    if every <= 0:
        return False
    previous = (
        EvalJob.objects.filter(run=run, periodic=True, checkpoint_step__lt=step)
        .order_by("-checkpoint_step")
        .values_list("checkpoint_step", flat=True)
        .first()
    )
    # Checkpoint steps need not be multiples of eval.every: evaluate the first one in each new interval.
    return step // every > (previous // every if previous is not None else 0)


# --- imports -------------------------------------------------------------------

_SAMPLES_NAME = re.compile(r"^samples_(?P<task>.+?)_\d{4}-\d{2}-\d{2}T[\d.\-]+\.jsonl$")


def import_results(
    *,
    user: AbstractBaseUser,
    project: Project,
    results_text: str,
    label: str = "",
    sample_files: Sequence[tuple[str, str]] = (),
) -> EvalJob:
    """Store an lm-eval (or Runwright) results JSON as a completed job, with lm-eval sample files if given.

    ``sample_files`` are (file name, text) pairs of lm-eval's ``samples_<task>_<date>.jsonl``.
    """
    require_role(user, project.team_id, Role.MEMBER)
    try:
        data = json.loads(results_text)
    except json.JSONDecodeError as exc:
        raise InputError({"results_file": f"not valid JSON: {exc.msg} (line {exc.lineno})"}) from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), dict) or not data["results"]:
        raise InputError({"results_file": "results: missing; this is not an lm-eval results file"})
    from modelcore.evaluation.results import task_scores

    scores = task_scores(data)
    if not any(scores.values()):
        raise InputError({"results_file": "results: no numeric metric in any task"})
    samples = data.get("samples") if isinstance(data.get("samples"), dict) else {}
    for filename, text in sample_files:
        task = _sample_file_task(filename, list(data["results"]))
        samples[task] = _lm_eval_samples(filename, text, task, data)
    config = data.get("config") if isinstance(data.get("config"), dict) else {}
    model_args = config.get("model_args")
    if isinstance(model_args, dict):
        model_args = model_args.get("pretrained")
    label = (label or "").strip() or str(model_args or data.get("model_name") or "imported results")
    n_shot = data.get("n-shot") if isinstance(data.get("n-shot"), dict) else {}
    shots = {v for v in n_shot.values() if isinstance(v, int)}
    with transaction.atomic():
        job = EVAL_STATES.create(
            EvalJob.objects,
            EvalStatus.COMPLETED,
            project=project,
            source=ModelSource.IMPORTED,
            label=label[:200],
            tasks=list(data["results"]),
            num_fewshot=shots.pop() if len(shots) == 1 else None,
            progress=1.0,
            results={k: v for k, v in data.items() if k != "samples"},
            has_samples=bool(samples),
            created_by=user,
            started_at=timezone.now(),
            finished_at=timezone.now(),
        )
        job.job_dir.mkdir(parents=True, exist_ok=True)
        full = {**data, "samples": samples} if samples else data
        job.results_file.write_text(json.dumps(full, default=str), encoding="utf-8")
    return job


def _sample_file_task(filename: str, tasks: list[str]) -> str:
    match = _SAMPLES_NAME.match(filename)
    if match and match["task"] in tasks:
        return match["task"]
    for task in sorted(tasks, key=len, reverse=True):
        if filename.startswith(f"samples_{task}"):
            return task
    raise InputError({"sample_files": f"{filename}: names no task of the results file ({', '.join(tasks)})"})


def _lm_eval_samples(filename: str, text: str, task: str, data: dict[str, Any]) -> list[dict[str, Any]]:
    """lm-eval's sample log in our record shape (the engine's reader), with the argmax choice as prediction."""
    from modelcore.evaluation.results import read_lm_eval_samples

    config = (data.get("configs") or {}).get(task) or {}
    output_type = config.get("output_type") if isinstance(config, dict) else None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "samples.jsonl"
        path.write_text(text, encoding="utf-8")
        try:
            records = read_lm_eval_samples(path, output_type or "multiple_choice")
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            message = str(exc).replace(str(path), filename)
            raise InputError({"sample_files": f"{filename}: not an lm-eval sample log ({message})"}) from None
    for record in records:
        lls = record.get("loglikelihoods")
        if output_type in (None, "multiple_choice") and isinstance(lls, list) and len(lls) > 1:
            record["prediction"] = max(range(len(lls)), key=lls.__getitem__)
    return records


# --- reports -------------------------------------------------------------------


def _report_jobs(project: Project, job_ids: Sequence[int]) -> list[EvalJob]:
    ids = list(dict.fromkeys(int(i) for i in job_ids))
    jobs = list(EvalJob.objects.filter(project=project, pk__in=ids))
    if len(jobs) != len(ids):
        raise InputError({"jobs": "some of the chosen eval jobs are not in this project"})
    if not jobs:
        raise InputError({"jobs": "choose at least one eval job"})
    return jobs


def create_report(*, user: AbstractBaseUser, project: Project, name: str, job_ids: Sequence[int]) -> Report:
    require_role(user, project.team_id, Role.MEMBER)
    name = (name or "").strip()
    if not name:
        raise InputError({"name": "give the report a name"})
    if len(name) > 200:
        raise InputError({"name": "must be at most 200 characters"})
    jobs = _report_jobs(project, job_ids)
    with transaction.atomic():
        report = Report.objects.create(project=project, name=name, created_by=user)
        report.jobs.set(jobs)
    return report


def update_report(*, user: AbstractBaseUser, report: Report, name: str, job_ids: Sequence[int]) -> Report:
    require_role(user, report.project.team_id, Role.MEMBER)
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InputError({"name": "give the report a name of at most 200 characters"})
    jobs = _report_jobs(report.project, job_ids)
    with transaction.atomic():
        report.name = name
        report.save(update_fields=["name", "updated_at"])
        report.jobs.set(jobs)
    return report


def delete_report(*, user: AbstractBaseUser, report: Report) -> None:
    require_role(user, report.project.team_id, Role.ADMIN)
    report.delete()
