"""Pages' endpoints for sampling from and exporting a run checkpoint.

Members start jobs (a viewer gets a 403 that says why); everyone who may see the run reads
them, follows them (the SSE stream, or polling the job's JSON) and downloads an export.
Another team's run or job is a 404.
"""

from __future__ import annotations

import json
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse, StreamingHttpResponse
from django.views.decorators.http import require_GET, require_POST

from webapp.input_errors import InputError, input_errors_as_json
from webapp.process_job_stream import job_events

# The run downloads' own streaming tar and attachment: an export is served like a checkpoint.
from webapp.runs.downloads import _attachment, _tar_chunks
from webapp.runs.selectors import run_for
from webapp.samples import selectors, services, transitions
from webapp.samples.models import SampleKind
from webapp.samples.presenters import job_row, job_state
from webapp.sse import sse_response, sse_view

MAX_BODY_CHARS = 64_000  # a JSON body several times the largest prompt


def _fields(request: HttpRequest) -> dict[str, Any]:
    """The posted fields: a JSON object, or the form's."""
    if request.content_type == "application/json":
        if len(request.body) > MAX_BODY_CHARS:
            raise InputError({"prompt": "the request is too large"})
        try:
            data = json.loads(request.body or b"{}")
        except ValueError:
            raise InputError({"body": "must be a JSON object"}) from None
        if not isinstance(data, dict):
            raise InputError({"body": "must be a JSON object"})
        return data
    return request.POST.dict()


@login_required
@require_POST
@input_errors_as_json
def start_sample(request: HttpRequest, run_id: int) -> JsonResponse:
    """Queue a sample from one of the run's checkpoints: ``step``, ``prompt``, ``temperature``, ``top_p``, ``max_tokens``."""
    run = run_for(request.user, run_id)
    data = _fields(request)
    job = services.create_sample_job(
        user=request.user,
        run=run,
        step=data.get("step"),
        prompt=data.get("prompt"),
        temperature=data.get("temperature", 0.8),
        top_p=data.get("top_p", 1.0),
        max_tokens=data.get("max_tokens", 100),
    )
    return JsonResponse(job_row(job), status=201)


@login_required
@require_POST
@input_errors_as_json
def start_export(request: HttpRequest, run_id: int, step: int) -> JsonResponse:
    """Queue the export of the run's checkpoint at ``step`` to Hugging Face format."""
    run = run_for(request.user, run_id)
    job = services.create_export_job(user=request.user, run=run, step=step)
    return JsonResponse(job_row(job), status=201)


@login_required
@require_POST
@input_errors_as_json
def cancel_job(request: HttpRequest, job_id: int) -> JsonResponse:
    """Stop a sampling or export job that has not ended."""
    job = services.request_cancel(user=request.user, job=selectors.sample_job_for(request.user, job_id))
    return JsonResponse(job_row(job))


@login_required
@require_GET
def run_sample_jobs(request: HttpRequest, run_id: int) -> JsonResponse:
    """The run's sampling history, newest first (and its newest export of each checkpoint)."""
    run = run_for(request.user, run_id)
    samples = [job_row(job) for job in selectors.jobs_of_run(run, SampleKind.SAMPLE)]
    exports = {str(step): job_state(job) for step, job in selectors.latest_exports(run).items()}
    return JsonResponse({"samples": samples, "exports": exports})


@login_required
@require_GET
def job_status(request: HttpRequest, job_id: int) -> JsonResponse:
    """What the page polls where it cannot hold the stream."""
    return JsonResponse(job_row(selectors.sample_job_for(request.user, job_id)))


@sse_view
async def job_stream(request: HttpRequest, user: AbstractBaseUser, job_id: int) -> HttpResponse:
    """SSE: the job's state (its text as it grows) as it changes, then its end."""
    job = await sync_to_async(selectors.sample_job_for)(user, job_id)  # 404 for another team's job
    body = job_events(transitions.JOBS, job.id)
    return sse_response(body)


@login_required
@require_GET
def export_archive(request: HttpRequest, job_id: int) -> StreamingHttpResponse:
    """A completed export's Hugging Face folder as a tar, streamed as it is built (viewers too)."""
    job = selectors.sample_job_for(request.user, job_id)
    folder = selectors.export_archive_dir(job)
    if folder is None:
        raise Http404("This job made no export (not an export, not completed, or its files are gone).")
    top = f"run{job.run_id}-step{job.checkpoint_step}-hf"
    return _attachment(_tar_chunks(folder, top), f"{top}.tar", "application/x-tar")
