"""Sampling from and exporting a run's checkpoint over the API: start a job, follow it, stop it.

The same services as the run page's sample box (``webapp.samples.services``): members
start jobs (a viewer gets a 403 naming the role), everyone who may see the run reads them,
another team's run or job is a 404. The job's text grows while it runs: poll
``GET sample-jobs/<id>`` until ``is_active`` is false. A completed export's Hugging Face
folder comes as a tar from ``GET sample-jobs/<id>/archive`` (``archive_url`` is the same
download for signed-in browsers).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404, HttpRequest, StreamingHttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.api.auth import ApiAuth
from webapp.api.lookups import run_member, run_of, sample_job_of
from webapp.api.pages import PageQuery, keyset_page
from webapp.api.schemas import REFUSALS, NoFields, RequestBody, answers
from webapp.input_errors import InputError

# The run downloads' streaming tar and attachment, as the run page's export download uses them.
from webapp.runs.downloads import _attachment, _tar_chunks
from webapp.samples import services
from webapp.samples.models import SampleJob, SampleKind
from webapp.samples.presenters import job_row
from webapp.samples.selectors import export_archive_dir

router = Router(tags=["samples and exports"])


class SampleJobOut(Schema):
    id: int
    kind: str = Field(description="sample or export")
    status: str
    text: str = Field(description="the text sampled so far")
    error: str
    is_active: bool
    archive_url: str = Field(description="a completed export's tar (the web download)")
    step: int = Field(description="the checkpoint's step")
    prompt: str
    temperature: float | None
    top_p: float | None
    max_tokens: int | None
    created_at: str | None
    created_by: str


class SampleJobList(Schema):
    jobs: list[SampleJobOut]
    next_cursor: str | None


# Typed loosely on purpose: the samples service bounds each setting and names the field.
class SampleIn(RequestBody):
    step: Any = Field(
        None, description="a kept checkpoint's step (required)", json_schema_extra={"type": "integer"}
    )
    prompt: Any = Field(
        None, description="the text to continue (required)", json_schema_extra={"type": "string"}
    )
    temperature: Any = Field(0.8, description="0 is greedy", json_schema_extra={"type": "number"})
    top_p: Any = Field(
        1.0, description="nucleus sampling, more than 0 up to 1", json_schema_extra={"type": "number"}
    )
    max_tokens: Any = Field(100, description="tokens to sample", json_schema_extra={"type": "integer"})


class ExportIn(RequestBody):
    step: Any = Field(
        None, description="a kept checkpoint's step (required)", json_schema_extra={"type": "integer"}
    )


class JobsQuery(PageQuery):
    kind: str = Field("", description="sample or export; both when left out")


@router.get(
    "runs/{int:run_id}/samples",
    response=answers({200: SampleJobList}),
    url_name="run_samples",
    auth=ApiAuth(guard=run_of),
)
def run_sample_jobs(request: HttpRequest, run_id: int, params: Query[JobsQuery]) -> dict[str, Any]:
    """The run's sampling and export jobs, newest first."""
    jobs = SampleJob.objects.filter(run=run_of(request, run_id)).select_related("created_by")
    if params.kind:
        if params.kind not in SampleKind.values:
            raise InputError({"kind": f"must be one of {', '.join(SampleKind.values)}"})
        jobs = jobs.filter(kind=params.kind)
    page = keyset_page(jobs, ("-created_at", "-id"), params)
    return {"jobs": [job_row(j) for j in page.rows], "next_cursor": page.next_cursor}


@router.post(
    "runs/{int:run_id}/samples",
    response=answers({201: SampleJobOut}),
    url_name="run_samples",
    auth=ApiAuth(guard=run_member),
)
def start_sample(request: HttpRequest, run_id: int, payload: SampleIn | None = None) -> Status:
    """Sample ``max_tokens`` after ``prompt`` from the run's checkpoint at ``step``."""
    payload = payload or SampleIn()
    job = services.create_sample_job(user=request.user, run=run_of(request, run_id), **payload.model_dump())
    return Status(201, job_row(job))


@router.post(
    "runs/{int:run_id}/exports",
    response=answers({201: SampleJobOut}),
    url_name="run_exports",
    auth=ApiAuth(guard=run_member),
)
def start_export(request: HttpRequest, run_id: int, payload: ExportIn | None = None) -> Status:
    """Export the run's checkpoint at ``step`` to a Hugging Face folder."""
    step = payload.step if payload else None
    job = services.create_export_job(user=request.user, run=run_of(request, run_id), step=step)
    return Status(201, job_row(job))


@router.get(
    "sample-jobs/{int:job_id}",
    response=answers({200: SampleJobOut}),
    url_name="sample_job",
    auth=ApiAuth(guard=sample_job_of),
)
def sample_job(request: HttpRequest, job_id: int) -> dict[str, Any]:
    """A job's state and its text so far."""
    return job_row(sample_job_of(request, job_id))


@router.post(
    "sample-jobs/{int:job_id}/cancel",
    response=answers({200: SampleJobOut}),
    url_name="sample_job_cancel",
    auth=ApiAuth(guard=sample_job_of),
)
def sample_job_cancel(request: HttpRequest, job_id: int, payload: NoFields | None = None) -> dict[str, Any]:
    """Stop a job that has not ended (a 400 naming ``job`` once it has)."""
    return job_row(services.request_cancel(user=request.user, job=sample_job_of(request, job_id)))


TAR_ANSWER = {
    "responses": {
        200: {  # ninja keys its own answers by int: the same key, so this one replaces "OK"
            "description": "the export's Hugging Face folder as an uncompressed tar, streamed as it is built",
            "content": {"application/x-tar": {"schema": {"type": "string", "format": "binary"}}},
        }
    }
}


@router.get(
    "sample-jobs/{int:job_id}/archive",
    response={200: None, **REFUSALS},
    url_name="sample_job_archive",
    auth=ApiAuth(guard=sample_job_of),
    openapi_extra=TAR_ANSWER,
)
def export_archive(request: HttpRequest, job_id: int) -> StreamingHttpResponse:
    """A completed export's folder as a tar (viewers too); 404 for any other job, or once its files are gone."""
    job = sample_job_of(request, job_id)
    folder = export_archive_dir(job)
    if folder is None:
        raise Http404("This job made no export (not an export, not completed, or its files are gone).")
    top = f"run{job.run_id}-step{job.checkpoint_step}-hf"
    return _attachment(_tar_chunks(folder, top), f"{top}.tar", "application/x-tar")
