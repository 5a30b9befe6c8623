"""Pages for eval jobs and comparison reports: parse input, check the role, call a service or selector."""

from __future__ import annotations

from typing import Any

from asgiref.sync import sync_to_async
from django.contrib import messages
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role, require_role
from webapp.evals import comparison, exports, transitions
from webapp.evals.forms import (
    EvalJobForm,
    ImportResultsForm,
    ReportForm,
    RunEvalForm,
    TaskUploadForm,
)
from webapp.evals.models import Report
from webapp.evals.presenters import job_state
from webapp.evals.selectors import (
    checkpoints_of_project,
    eval_job_for,
    eval_jobs_of_project,
    job_samples,
    report_for,
    report_jobs,
    reportable_jobs,
    reports_of_project,
)
from webapp.evals.services import (
    ModelRef,
    create_eval_jobs,
    create_report,
    delete_report,
    import_results,
    request_eval_cancel,
    update_report,
)
from webapp.evals.sources import available_tasks
from webapp.evals.taskupload import install_task_zip
from webapp.process_job_stream import job_events
from webapp.projects.selectors import project_for
from webapp.runs.assets import plotly_js_url
from webapp.runs.selectors import run_for
from webapp.sse import sse_response, sse_view
from webapp.whole_numbers import parse_whole_number

# --- jobs ----------------------------------------------------------------------


@login_required
@require_GET
def project_evals(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    jobs = eval_jobs_of_project(request.user, project)
    can_launch = has_role(request.user, project.team_id, Role.MEMBER)
    return render(
        request,
        "evals/project.html",
        {
            "project": project,
            "jobs": jobs,
            "reports": reports_of_project(request.user, project),
            "tasks": available_tasks(project),
            "can_launch": can_launch,
            "report_form": ReportForm(jobs=[j for j in jobs if j.results]) if can_launch else None,
        },
    )


@login_required
@require_http_methods(["GET", "POST"])
def new_eval(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    require_role(request.user, project.team_id, Role.MEMBER)
    form_args = {
        "checkpoints": checkpoints_of_project(request.user, project),
        "tasks": available_tasks(project),
    }
    if request.method == "POST":
        form = EvalJobForm(request.POST, **form_args)
        if form.is_valid():
            jobs = form.submit(
                create_eval_jobs,
                user=request.user,
                project=project,
                models=form.model_refs(),
                tasks=form.cleaned_data["tasks"],
                num_fewshot=form.cleaned_data["num_fewshot"],
                limit=form.cleaned_data["limit"],
                report_name=form.cleaned_data["report_name"],
            )
            if jobs is not None:
                if len(jobs) == 1:
                    return redirect("evals:job", job_id=jobs[0].id)
                messages.success(request, f"{len(jobs)} eval jobs queued.")
                return redirect("evals:project", project_id=project.id)
        status = 400
    else:
        initial = {"models": request.GET.getlist("model"), "tasks": request.GET.getlist("task")}
        form = EvalJobForm(initial=initial, **form_args)
        status = 200
    return render(request, "evals/new.html", {"project": project, "form": form}, status=status)


@login_required
@require_GET
def run_panel(request: HttpRequest, run_id: int) -> HttpResponse:
    """The run page's evaluations panel alone, for the page to refresh when the run ends."""
    return render(request, "evals/run_panel_fragment.html", {"run": run_for(request.user, run_id)})


@login_required
@require_http_methods(["GET", "POST"])
def run_evaluate(request: HttpRequest, run_id: int) -> HttpResponse:
    """ "Evaluate checkpoint N on tasks ..." for one run (posted by the run page's panel)."""
    run = run_for(request.user, run_id)
    require_role(request.user, run.project.team_id, Role.MEMBER)
    form = RunEvalForm(
        request.POST or None,
        steps=list(run.checkpoints.order_by("-step").values_list("step", flat=True)),
        tasks=available_tasks(run.project),
    )
    if request.method == "POST" and form.is_valid():
        jobs = form.submit(
            create_eval_jobs,
            user=request.user,
            project=run.project,
            models=[ModelRef("checkpoint", run_id=run.id, step=form.cleaned_data["step"])],
            tasks=form.cleaned_data["tasks"],
            num_fewshot=form.cleaned_data["num_fewshot"],
            limit=form.cleaned_data["limit"],
        )
        if jobs is not None:
            return redirect("evals:job", job_id=jobs[0].id)
    status = 400 if request.method == "POST" else 200
    return render(request, "evals/run_evaluate.html", {"run": run, "form": form}, status=status)


@login_required
@require_GET
def job_detail(request: HttpRequest, job_id: int) -> HttpResponse:
    job = eval_job_for(request.user, job_id)
    return render(
        request,
        "evals/job.html",
        {
            "job": job,
            "scores": comparison.scores_of(job),
            "has_results_file": job.results_file.is_file(),
            "status_state": job_state(job),
            "can_cancel": job.is_active and has_role(request.user, job.project.team_id, Role.MEMBER),
        },
    )


@login_required
@require_GET
def job_status(request: HttpRequest, job_id: int) -> JsonResponse:
    """What the job page polls for its progress bar."""
    return JsonResponse(job_state(eval_job_for(request.user, job_id)))


@sse_view
async def job_stream(request: HttpRequest, user: AbstractBaseUser, job_id: int) -> HttpResponse:
    """SSE: the job's state as it changes, then its end (the page polls ``job_status`` where it cannot)."""
    job = await sync_to_async(eval_job_for)(user, job_id)  # 404 for another team's job
    return sse_response(job_events(transitions.JOBS, job.id))


@login_required
@require_POST
def job_cancel(request: HttpRequest, job_id: int) -> HttpResponse:
    # A viewer's PermissionDenied is a 403 page naming the role it takes (they see no button).
    job = request_eval_cancel(user=request.user, job=eval_job_for(request.user, job_id))
    if job.is_active:
        messages.info(request, "Cancel requested; the evaluator stops within seconds.")
    else:
        messages.info(request, f"The eval job is {job.status}.")
    return redirect("evals:job", job_id=job.id)


@login_required
@require_GET
def job_results(request: HttpRequest, job_id: int) -> HttpResponse:
    """The full results JSON (with per-sample records) as a download."""
    job = eval_job_for(request.user, job_id)
    if not job.results_file.is_file():
        raise Http404("This job has no results file.")
    return FileResponse(
        open(job.results_file, "rb"),  # noqa: SIM115 - FileResponse closes it
        as_attachment=True,
        filename=f"eval-{job.id}-results.json",
        content_type="application/json",
    )


@login_required
@require_http_methods(["GET", "POST"])
def upload_tasks(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    require_role(request.user, project.team_id, Role.MEMBER)
    form = TaskUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["archive"]
        names = form.submit(install_task_zip, project, upload, upload.name, upload.size, actor=request.user)
        if names is not None:
            messages.success(request, f"Installed task{'s' if len(names) > 1 else ''}: {', '.join(names)}.")
            return redirect("evals:project", project_id=project.id)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "evals/upload_tasks.html",
        {"project": project, "form": form, "tasks": available_tasks(project)},
        status=status,
    )


@login_required
@require_http_methods(["GET", "POST"])
def import_view(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    require_role(request.user, project.team_id, Role.MEMBER)
    form = ImportResultsForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        job = form.submit(
            import_results,
            user=request.user,
            project=project,
            results_text=form.cleaned_data["results_file"],
            label=form.cleaned_data["label"],
            sample_files=form.cleaned_data["sample_files"],
        )
        if job is not None:
            messages.success(request, f"Imported {len(job.tasks)} task results as eval job #{job.id}.")
            return redirect("evals:job", job_id=job.id)
    status = 400 if request.method == "POST" else 200
    return render(request, "evals/import.html", {"project": project, "form": form}, status=status)


# --- reports -------------------------------------------------------------------


@login_required
@require_POST
def report_new(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(request.user, project_id)
    require_role(request.user, project.team_id, Role.MEMBER)
    jobs = reportable_jobs(request.user, project)
    form = ReportForm(request.POST, jobs=jobs)
    if form.is_valid():
        report = form.submit(create_report, user=request.user, project=project, **form.report_fields())
        if report is not None:
            return redirect("evals:report", report_id=report.id)
    return render(
        request, "evals/report_form.html", {"project": project, "form": form, "report": None}, status=400
    )


@login_required
@require_http_methods(["GET", "POST"])
def report_edit(request: HttpRequest, report_id: int) -> HttpResponse:
    report = report_for(request.user, report_id)
    require_role(request.user, report.project.team_id, Role.MEMBER)
    jobs = reportable_jobs(request.user, report.project)
    initial = {"name": report.name, "jobs": [str(j.id) for j in report_jobs(report)]}
    form = ReportForm(request.POST or None, jobs=jobs, initial=initial)
    if request.method == "POST" and form.is_valid():
        updated = form.submit(update_report, user=request.user, report=report, **form.report_fields())
        if updated is not None:
            return redirect("evals:report", report_id=report.id)
    status = 400 if request.method == "POST" else 200
    return render(
        request,
        "evals/report_form.html",
        {"project": report.project, "form": form, "report": report},
        status=status,
    )


@login_required
@require_POST
def report_delete(request: HttpRequest, report_id: int) -> HttpResponse:
    report = report_for(request.user, report_id)
    project_id = report.project_id
    delete_report(user=request.user, report=report)  # PermissionDenied: a 403 page naming the role
    messages.success(request, "Report deleted.")
    return redirect("evals:project", project_id=project_id)


def _report_context(request: HttpRequest, report: Report) -> dict[str, Any]:
    jobs = report_jobs(report)
    data = comparison.build_report(jobs)
    done = {m["id"]: m for m in data.models}
    a_id, b_id = parse_whole_number(request.GET.get("a")), parse_whole_number(request.GET.get("b"))
    ids = list(done)
    if a_id not in done:
        a_id = ids[0] if ids else None
    if b_id not in done or b_id == a_id:
        b_id = next((i for i in ids if i != a_id), None)
    pair = None
    if a_id is not None and b_id is not None:
        job_a = next(j for j in jobs if j.id == a_id)
        job_b = next(j for j in jobs if j.id == b_id)
        pair = comparison.compare_pair(job_a, job_b, job_samples(job_a), job_samples(job_b), data.tasks)
    return {
        "report": report,
        "project": report.project,
        "jobs": jobs,
        "data": data,
        "rows": [{"row": row, "cells": list(zip(data.models, row.cells, strict=True))} for row in data.tasks],
        "chart_payload": data.chart_payload(),
        "a_id": a_id,
        "b_id": b_id,
        "label_a": done[a_id]["label"] if a_id in done else "",
        "label_b": done[b_id]["label"] if b_id in done else "",
        "pair": pair,
    }


@login_required
@require_GET
def report_detail(request: HttpRequest, report_id: int) -> HttpResponse:
    report = report_for(request.user, report_id)
    context = _report_context(request, report)
    context.update(
        plotly_url=plotly_js_url(),
        can_edit=has_role(request.user, report.project.team_id, Role.MEMBER),
        can_delete=has_role(request.user, report.project.team_id, Role.ADMIN),
    )
    return render(request, "evals/report.html", context)


@login_required
@require_GET
def report_disagreements(request: HttpRequest, report_id: int) -> HttpResponse:
    report = report_for(request.user, report_id)
    context = _report_context(request, report)
    rows = {r.task: r for r in context["data"].tasks}
    task = request.GET.get("task") or next(iter(rows), "")
    shared = differing = 0
    samples: list[dict[str, Any]] = []
    if task in rows and context["pair"] is not None:
        jobs = {j.id: j for j in context["jobs"]}
        shared, differing, samples = comparison.disagreements(
            job_samples(jobs[context["a_id"]]), job_samples(jobs[context["b_id"]]), task, rows[task].metric
        )
    elif task and task not in rows:
        raise Http404("This report has no such task.")
    context.update(
        task=task,
        metric=rows[task].metric if task in rows else "",
        shared=shared,
        differing=differing,
        samples=samples,
    )
    return render(request, "evals/disagreements.html", context)


@login_required
@require_GET
def report_export(request: HttpRequest, report_id: int, fmt: str) -> HttpResponse:
    report = report_for(request.user, report_id)
    context = _report_context(request, report)
    name = slugify(report.name) or f"report-{report.id}"
    if fmt == "csv":
        response = HttpResponse(exports.report_csv(context["jobs"], context["data"]), content_type="text/csv")
    elif fmt == "json":
        pair_ids = (context["a_id"], context["b_id"]) if context["pair"] else None
        body = exports.report_json(report, context["jobs"], context["data"], context["pair"], pair_ids)
        response = HttpResponse(body, content_type="application/json")
    elif fmt == "html":
        response = HttpResponse(exports.report_html(context), content_type="text/html; charset=utf-8")
    else:
        raise Http404("Export as csv, json or html.")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response
