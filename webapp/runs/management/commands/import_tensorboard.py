"""``python manage.py import_tensorboard DIR --project P``: TensorBoard scalars in, one run per folder, deduplicated."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from webapp.external.importers import import_tensorboard
from webapp.input_errors import InputError
from webapp.runs.management.commands.import_mlflow import project_and_user


class Command(BaseCommand):
    help = "Import the scalars of TensorBoard event files under DIR (one run per folder) into a project."

    def add_arguments(self, parser):
        parser.add_argument(
            "dir", help="a folder holding events.out.tfevents.* files (in subfolders: one run each)"
        )
        parser.add_argument(
            "--project", required=True, help="the Runwright project: its id, or its unique name"
        )
        parser.add_argument("--user", help="who the runs are created by (default: the project's creator)")

    def handle(self, *args, dir: str, project: str, user: str | None, **options):
        found, owner = project_and_user(project, user)
        try:
            summary = import_tensorboard(user=owner, project=found, log_dir=dir)
        except InputError as exc:
            raise CommandError("; ".join(f"{k}: {v}" for k, v in exc.errors.items())) from None
        self.stdout.write(
            f"{len(summary.created)} runs created, {len(summary.updated)} updated, {summary.points} points written"
        )
