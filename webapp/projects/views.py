from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods

from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role, require_role
from webapp.annotations.selectors import project_tags
from webapp.input_errors import INPUT_ERRORS, InputError, input_errors_as_json
from webapp.projects.forms import ProjectForm
from webapp.projects.selectors import project_for, project_list
from webapp.projects.services import create_project, delete_project
from webapp.runs.filters import RunsQuery, column_choices, parse_runs_query, runs_page
from webapp.runs.models import ACTIVE_STATUSES, RunStatus


@login_required
@require_http_methods(["GET", "POST"])
def project_index(request: HttpRequest) -> HttpResponse:
    form = ProjectForm(request.POST or None, user=request.user)
    if request.method == "POST" and form.is_valid():
        project = form.submit(
            create_project,
            user=request.user,
            name=form.cleaned_data["name"],
            team=form.cleaned_data.get("team"),
            description=form.cleaned_data["description"],
        )
        if project is not None:
            return redirect("projects:detail", project_id=project.id)
    status = 400 if request.method == "POST" else 200  # a form with errors, as the other forms answer
    return render(
        request, "projects/list.html", {"projects": project_list(request.user), "form": form}, status=status
    )


@login_required
@require_GET
def project_detail(request: HttpRequest, project_id: int) -> HttpResponse:
    """The project's runs table; its filter, columns, sort and page live in the query string."""
    project = project_for(request.user, project_id)
    errors: dict[str, str] = {}
    try:
        query = parse_runs_query(request.GET)
    except InputError as exc:
        errors, query = exc.errors, RunsQuery()
    page = runs_page(request.user, project, query)
    can_edit = has_role(request.user, project.team_id, Role.MEMBER)
    return render(
        request,
        "projects/detail.html",
        {
            "project": project,
            "page": page,
            "runs": page.runs,
            "query": query,
            "errors": errors,
            "form": {
                "q": request.GET.get("q", ""),
                "where": "; ".join(w for w in request.GET.getlist("where") if w.strip()),
                "columns": request.GET.get("columns", ""),
                # Several values (status=failed,lost) show as one choice, so Apply keeps them.
                "status": ",".join(query.statuses),
                "tag": ",".join(query.tags),
                "preset": request.GET.get("preset", ""),
            },
            "statuses": RunStatus.values,
            "project_tags": project_tags(project),
            "column_choices": column_choices(project),
            "can_launch": can_edit,
            "can_edit": can_edit,
            "can_delete": has_role(request.user, project.team_id, Role.ADMIN),
        },
        status=400 if errors else 200,
    )


@login_required
@require_GET
@input_errors_as_json
def project_runs_json(request: HttpRequest, project_id: int) -> JsonResponse:
    """One page of the runs table as data and as the rows the page renders (the page polls this)."""
    project = project_for(request.user, project_id)
    page = runs_page(request.user, project, parse_runs_query(request.GET))
    can_edit = has_role(request.user, project.team_id, Role.MEMBER)
    rows = render_to_string(
        "projects/_run_rows.html",
        {
            "runs": page.runs,
            "page": page,
            "query": page.query,
            "project": project,
            "can_launch": can_edit,
            "can_edit": can_edit,
        },
        request,
    )
    return JsonResponse(
        {
            "runs": page.runs,
            "rows": rows,
            "total": page.total,
            "first": page.first,
            "last": page.last,
            "next_cursor": page.next_cursor,
            "next_query": page.next_query,
        }
    )


@login_required
@require_http_methods(["GET", "POST"])
def project_delete(request: HttpRequest, project_id: int) -> HttpResponse:
    """A confirmation page (GET), then the delete (POST); refused while a run is active."""
    project = project_for(request.user, project_id)
    require_role(request.user, project.team_id, Role.ADMIN)
    context = {
        "project": project,
        "run_count": project.runs.count(),
        "active_runs": project.runs.filter(status__in=ACTIVE_STATUSES).order_by("id"),
    }
    if request.method == "GET":
        return render(request, "projects/delete.html", context)
    try:
        delete_project(user=request.user, project=project)
    except INPUT_ERRORS as exc:
        return render(
            request, "projects/delete.html", {**context, "errors": list(exc.errors.values())}, status=400
        )
    messages.success(request, f"Project {project.name} and its runs were deleted.")
    return redirect("projects:list")
