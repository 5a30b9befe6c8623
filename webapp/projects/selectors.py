"""Projects as one user may see them: only their teams' projects exist for them."""

from __future__ import annotations

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db.models import Count, QuerySet
from django.http import Http404

from webapp.projects.models import Project


def projects_visible_to(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    if not user.is_authenticated:
        return Project.objects.none()
    return Project.objects.filter(team__memberships__user=user).select_related("team")


def project_for(user: AbstractBaseUser | AnonymousUser, project_id: int) -> Project:
    """The project if ``user`` may see it; another team's project raises Http404."""
    project = projects_visible_to(user).filter(pk=project_id).first()
    if project is None:
        raise Http404("No such project.")
    return project


def project_list(user: AbstractBaseUser | AnonymousUser) -> QuerySet[Project]:
    """Visible projects with their run counts, for the projects page."""
    return projects_visible_to(user).annotate(run_count=Count("runs")).order_by("team__name", "name")
