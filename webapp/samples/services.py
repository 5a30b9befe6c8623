"""Writes for sampling and export jobs: create one (and send it to a worker after commit).

Members start them; the role is checked here, so a second caller cannot forget it. Every
setting comes from a request: each is parsed strictly and bounded, and a bad one is an
``InputError`` naming the field.
"""

from __future__ import annotations

import math
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.input_errors import InputError
from webapp.runs.models import Run
from webapp.runs.selectors import checkpoint_dir
from webapp.samples import transitions
from webapp.samples.models import SAMPLE_STATES, SampleJob, SampleKind, SampleStatus
from webapp.whole_numbers import BIGINT_MAX, parse_whole_number

MAX_PROMPT_CHARS = 4000
MAX_TOKENS = 1024
MAX_TEMPERATURE = 2.0


def _number(raw: Any, field: str, low: float, high: float, *, whole: bool = False) -> float:
    """``raw`` (text from a form, or a JSON number) as a number within ``[low, high]``."""
    rule = f"a {'whole ' if whole else ''}number from {low:g} to {high:g}"
    if isinstance(raw, bool):
        raise InputError({field: f"must be {rule}"})
    if isinstance(raw, int | float):
        value: float | None = float(raw)
    elif isinstance(raw, str) and len(raw) <= 40:
        if whole:
            parsed = parse_whole_number(raw.strip())
            value = float(parsed) if parsed is not None else None
        else:
            try:
                value = float(raw.strip())
            except ValueError:
                value = None
    else:
        value = None
    if value is None or not math.isfinite(value) or (whole and not value.is_integer()):
        raise InputError({field: f"must be {rule}"})
    if not low <= value <= high:
        raise InputError({field: f"must be {rule} (got {value:g})"})
    return value


def _kept_step(run: Run, raw: Any) -> int:
    step = int(_number(raw, "step", 0, BIGINT_MAX, whole=True))
    if checkpoint_dir(run, step) is None:
        raise InputError({"step": f"the run has no kept checkpoint at step {step} on disk"})
    return step


def create_sample_job(
    *,
    user: AbstractBaseUser,
    run: Run,
    step: Any,
    prompt: Any,
    temperature: Any = 0.8,
    top_p: Any = 1.0,
    max_tokens: Any = 100,
) -> SampleJob:
    """Queue sampling ``max_tokens`` after ``prompt`` from the run's checkpoint at ``step``. Raises InputError."""
    require_role(user, run.project.team_id, Role.MEMBER)
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError({"prompt": "write some text for the model to continue"})
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError({"prompt": f"at most {MAX_PROMPT_CHARS} characters (got {len(prompt)})"})
    if "\x00" in prompt:
        raise InputError({"prompt": "must not contain NUL characters"})
    settings = {
        "temperature": _number(temperature, "temperature", 0.0, MAX_TEMPERATURE),
        "top_p": _number(top_p, "top_p", 0.0, 1.0),
        "max_tokens": int(_number(max_tokens, "max_tokens", 1, MAX_TOKENS, whole=True)),
    }
    if settings["top_p"] <= 0.0:
        raise InputError({"top_p": "must be more than 0 (1 keeps every token)"})
    return _create(user, run, _kept_step(run, step), SampleKind.SAMPLE, prompt=prompt, **settings)


def create_export_job(*, user: AbstractBaseUser, run: Run, step: Any) -> SampleJob:
    """Queue the export of the run's checkpoint at ``step`` to a Hugging Face folder. Raises InputError."""
    require_role(user, run.project.team_id, Role.MEMBER)
    return _create(user, run, _kept_step(run, step), SampleKind.EXPORT)


def request_cancel(*, user: AbstractBaseUser, job: SampleJob) -> SampleJob:
    """Stop a queued or running job (its runner stops the engine). Raises InputError once it has ended."""
    require_role(user, job.run.project.team_id, Role.MEMBER)
    if not transitions.JOBS.request_cancel(job.id):
        raise InputError({"job": f"has already ended ({job.status})"})
    job.refresh_from_db()
    return job


def _create(user: AbstractBaseUser, run: Run, step: int, kind: str, **fields: Any) -> SampleJob:
    with transaction.atomic():
        job = SAMPLE_STATES.create(
            SampleJob.objects,
            SampleStatus.QUEUED,
            run=run,
            checkpoint_step=step,
            kind=kind,
            created_by=user,
            **fields,
        )
        transitions.JOBS.send_on_commit(job.id)
    return job
