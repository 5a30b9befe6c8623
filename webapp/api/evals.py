"""Eval jobs over the API: start them on checkpoints or model folders, follow them, cancel them.

Models are named as on the web form: ``ckpt:<run id>:<step>`` or ``hf:<path under the
shared models folder>``.
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse

from webapp.api.auth import api_view
from webapp.api.body import json_object
from webapp.api.fields import optional_whole_number, string, string_list
from webapp.evals.presenters import job_detail
from webapp.evals.selectors import eval_job_for, eval_jobs_of_project
from webapp.evals.services import ModelRef, create_eval_jobs, request_eval_cancel
from webapp.projects.selectors import project_for

FIELDS = ("models", "tasks", "num_fewshot", "limit", "report_name")


@api_view(("GET", "POST"))
def project_evals(request: HttpRequest, project_id: int) -> JsonResponse:
    project = project_for(request.user, project_id)
    if request.method == "GET":
        return JsonResponse({"jobs": [job_detail(j) for j in eval_jobs_of_project(request.user, project)]})
    data = json_object(request, FIELDS)
    jobs = create_eval_jobs(
        user=request.user,
        project=project,
        models=[ModelRef.parse(m) for m in string_list(data.get("models", []), "models")],
        tasks=string_list(data.get("tasks", []), "tasks"),
        num_fewshot=optional_whole_number(data.get("num_fewshot"), "num_fewshot"),
        limit=optional_whole_number(data.get("limit"), "limit"),
        report_name=string(data.get("report_name", ""), "report_name"),
    )
    return JsonResponse({"jobs": [job_detail(j) for j in jobs]}, status=201)


@api_view(("GET",))
def eval_job(request: HttpRequest, job_id: int) -> JsonResponse:
    return JsonResponse(job_detail(eval_job_for(request.user, job_id)))


@api_view(("POST",))
def eval_job_cancel(request: HttpRequest, job_id: int) -> JsonResponse:
    job = eval_job_for(request.user, job_id)  # another team's job is a 404 whatever the body
    json_object(request, ())
    job = request_eval_cancel(user=request.user, job=job)
    return JsonResponse(job_detail(job))
