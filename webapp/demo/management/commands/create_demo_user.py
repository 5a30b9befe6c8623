"""``python manage.py create_demo_user``: the demo login, team and project (idempotent)."""

from __future__ import annotations

from django.core.management.base import BaseCommand

from webapp.demo.services import ensure_demo_user


class Command(BaseCommand):
    help = "Create (or reuse) user 'demo' with a team and project 'demo', and print the login."

    def handle(self, *args, **options):
        user, password, project = ensure_demo_user()
        self.stdout.write(f"username: {user.get_username()}")
        self.stdout.write(f"password: {password}")
        self.stdout.write(f"project: {project.name} (id {project.id})")
