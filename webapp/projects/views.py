from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.template.loader import render_to_string
from django.views.decorators.http import require_GET, require_http_methods

from webapp.accounts.models import Role
from webapp.accounts.permissions import has_role
from webapp.projects.forms import ProjectForm
from webapp.projects.selectors import project_for, project_list
from webapp.projects.services import create_project
from webapp.runs.presenters import run_summary
from webapp.runs.selectors import runs_of_project


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
    project = project_for(request.user, project_id)
    runs = [run_summary(r) for r in runs_of_project(request.user, project)]
    return render(
        request,
        "projects/detail.html",
        {
            "project": project,
            "runs": runs,
            "can_launch": has_role(request.user, project.team_id, Role.MEMBER),
        },
    )


@login_required
@require_GET
def project_runs_json(request: HttpRequest, project_id: int) -> JsonResponse:
    """The runs table's data, and its rows as the page renders them (the page polls this)."""
    project = project_for(request.user, project_id)
    runs = [run_summary(r) for r in runs_of_project(request.user, project)]
    can_launch = has_role(request.user, project.team_id, Role.MEMBER)
    rows = render_to_string(
        "projects/_run_rows.html", {"runs": runs, "project": project, "can_launch": can_launch}, request
    )
    return JsonResponse({"runs": runs, "rows": rows})
