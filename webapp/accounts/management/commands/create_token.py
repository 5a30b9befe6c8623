"""``python manage.py create_token USERNAME``: print a new API token for that user."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from webapp.accounts.services import create_api_token
from webapp.input_errors import InputError


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it (it is shown only once)."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--name", default="", help="A label to tell tokens apart.")
        parser.add_argument(
            "--expires-in-days", type=int, default=None, help="Refuse the token after this many days."
        )
        parser.add_argument("--read-only", action="store_true", help="The token may only read (GET).")

    def handle(
        self, *args, username: str, name: str, expires_in_days: int | None, read_only: bool, **options
    ):
        User = get_user_model()
        try:
            user = User.objects.get(username=username)
        except User.DoesNotExist:
            raise CommandError(
                f"no user named {username!r}; create one with `manage.py createsuperuser`"
            ) from None
        try:
            secret = create_api_token(user, name=name, expires_in_days=expires_in_days, read_only=read_only)
        except InputError as exc:
            raise CommandError(str(exc).replace("expires_in_days", "--expires-in-days")) from None
        self.stdout.write(secret)
