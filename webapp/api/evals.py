"""Eval jobs over the API: start them on checkpoints or model folders, follow them, cancel them.

Models are named as on the web form: ``ckpt:<run id>:<step>`` or ``hf:<path under the
shared models folder>``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.api.auth import ApiAuth
from webapp.api.fields import OptionalWholeNumber, StringList, Text
from webapp.api.lookups import eval_job_of, project_of
from webapp.api.pages import PageQuery, keyset_page
from webapp.api.schemas import NoFields, Open, RequestBody, answers
from webapp.evals.presenters import job_detail
from webapp.evals.selectors import eval_jobs_visible_to
from webapp.evals.services import ModelRef, create_eval_jobs, request_eval_cancel

router = Router(tags=["eval jobs"])


class EvalModel(Open):
    source: str
    run: int | None
    checkpoint_step: int | None
    hf_path: str
    label: str


class EvalJobOut(Open):
    id: int
    status: str
    progress: float
    error: str
    is_active: bool
    cancel_requested: bool
    project: int
    model: EvalModel
    tasks: list[str]
    num_fewshot: int | None
    limit: int | None
    scores: dict[str, dict[str, dict[str, float | None]]]
    created_at: str | None


class EvalJobList(Schema):
    jobs: list[EvalJobOut]
    next_cursor: str | None = None


class EvalIn(RequestBody):
    models: StringList = Field([], description="ckpt:<run id>:<step> or hf:<folder>")
    tasks: StringList = Field([], description="task names, e.g. rw_arith")
    num_fewshot: OptionalWholeNumber = None
    limit: OptionalWholeNumber = Field(None, description="at most this many examples per task")
    report_name: Text = Field("", description="also make a comparison report of the new jobs")


@router.get(
    "projects/{int:project_id}/evals",
    response=answers({200: EvalJobList}),
    url_name="project_evals",
    auth=ApiAuth(guard=project_of),
)
def project_evals(request: HttpRequest, project_id: int, params: Query[PageQuery]) -> dict[str, Any]:
    """The project's eval jobs, newest first."""
    jobs = eval_jobs_visible_to(request.user).filter(project=project_of(request, project_id))
    page = keyset_page(jobs, ("-created_at", "-id"), params)
    return {"jobs": [job_detail(j) for j in page.rows], "next_cursor": page.next_cursor}


@router.post(
    "projects/{int:project_id}/evals",
    response=answers({201: EvalJobList}),
    url_name="project_evals",
    auth=ApiAuth(guard=project_of),
)
def new_evals(request: HttpRequest, project_id: int, payload: EvalIn | None = None) -> Status:
    """One job per model, each on every task."""
    payload = payload or EvalIn()
    jobs = create_eval_jobs(
        user=request.user,
        project=project_of(request, project_id),
        models=[ModelRef.parse(m) for m in payload.models],
        tasks=payload.tasks,
        num_fewshot=payload.num_fewshot,
        limit=payload.limit,
        report_name=payload.report_name,
    )
    return Status(201, {"jobs": [job_detail(j) for j in jobs]})


@router.get(
    "evals/{int:job_id}",
    response=answers({200: EvalJobOut}),
    url_name="eval_job",
    auth=ApiAuth(guard=eval_job_of),
)
def eval_job(request: HttpRequest, job_id: int) -> dict[str, Any]:
    return job_detail(eval_job_of(request, job_id))


@router.post(
    "evals/{int:job_id}/cancel",
    response=answers({200: EvalJobOut}),
    url_name="eval_job_cancel",
    auth=ApiAuth(guard=eval_job_of),
)
def eval_job_cancel(request: HttpRequest, job_id: int, payload: NoFields | None = None) -> dict[str, Any]:
    return job_detail(request_eval_cancel(user=request.user, job=eval_job_of(request, job_id)))
