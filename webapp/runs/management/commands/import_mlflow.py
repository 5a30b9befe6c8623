"""``python manage.py import_mlflow --tracking-uri URI --experiment NAME --project P``: MLflow runs in, deduplicated."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.external.importers import import_mlflow
from webapp.input_errors import InputError
from webapp.projects.models import Project
from webapp.whole_numbers import parse_whole_number


def project_and_user(project: str, username: str | None) -> tuple[Project, Any]:
    """The project named by ``--project`` (an id, or a unique name) and who imports into it."""
    project_id = parse_whole_number(project)
    projects = (
        Project.objects.filter(pk=project_id)
        if project_id is not None
        else Project.objects.filter(name=project)
    )
    found = list(projects.select_related("team", "created_by")[:2])
    if len(found) != 1:
        problem = "no such project" if not found else "several projects have that name; give its id"
        raise CommandError(f"--project {project!r}: {problem}")
    owner = found[0].created_by
    if username:
        owner = get_user_model().objects.filter(username=username).first()
    if owner is None:
        raise CommandError("--user: no such user (the project has no creator: name one)")
    return found[0], owner


class Command(BaseCommand):
    help = "Import an MLflow experiment's runs (params, tags, metric histories, status) into a project."

    def add_arguments(self, parser):
        parser.add_argument(
            "--tracking-uri", required=True, help="MLflow's tracking URI (http://..., file:...)"
        )
        parser.add_argument("--experiment", required=True, help="the MLflow experiment's name")
        parser.add_argument(
            "--project", required=True, help="the Runwright project: its id, or its unique name"
        )
        parser.add_argument("--user", help="who the runs are created by (default: the project's creator)")

    def handle(self, *args, tracking_uri: str, experiment: str, project: str, user: str | None, **options):
        found, owner = project_and_user(project, user)
        try:
            summary = import_mlflow(
                user=owner, project=found, tracking_uri=tracking_uri, experiment=experiment
            )
        except InputError as exc:
            raise CommandError(
                "; ".join(f"--{k.replace('_', '-')}: {v}" for k, v in exc.errors.items())
            ) from None
        self.stdout.write(
            f"{len(summary.created)} runs created, {len(summary.updated)} updated, {summary.points} points written"
        )
