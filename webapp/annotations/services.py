"""Writes of tags and notes: members edit, viewers read (a viewer's write is a PermissionDenied)."""

from __future__ import annotations

import re
from collections.abc import Iterable

from django.contrib.auth.models import AbstractBaseUser
from django.db import transaction

from webapp.accounts.models import Role
from webapp.accounts.permissions import require_role
from webapp.annotations.models import NOTE_MAX_LENGTH, TAG_MAX_LENGTH, NoteRevision, RunTag
from webapp.input_errors import InputError
from webapp.runs.models import Run

# Letters, digits and a few separators: a tag goes into URLs (``?tag=``) and filter text.
TAG_PATTERN = re.compile(rf"[a-z0-9][a-z0-9._:+/-]{{0,{TAG_MAX_LENGTH - 1}}}")
MAX_TAGS_PER_RUN = 30
MAX_TAGS_PER_REQUEST = 30
NOTE_HISTORY = 10  # revisions kept per run, the note itself included


def clean_tag(value: object, field: str = "tags") -> str:
    """A tag as stored (trimmed, lower case), or an InputError naming ``field``."""
    if not isinstance(value, str):
        raise InputError({field: "each tag must be a string"})
    tag = value.strip().lower()
    if not TAG_PATTERN.fullmatch(tag):
        raise InputError(
            {
                field: f"{value[:60]!r} is not a tag: 1 to {TAG_MAX_LENGTH} characters, letters, "
                "digits and . _ : + / - (starting with a letter or digit)"
            }
        )
    return tag


def clean_tags(values: object, field: str = "tags") -> list[str]:
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list) or not values:
        raise InputError({field: 'a non-empty list of tags, e.g. ["baseline"]'})
    if len(values) > MAX_TAGS_PER_REQUEST:
        raise InputError({field: f"at most {MAX_TAGS_PER_REQUEST} tags at once"})
    return list(dict.fromkeys(clean_tag(v, field) for v in values))


def add_tags(*, user: AbstractBaseUser, run: Run, names: Iterable[str]) -> list[str]:
    """Tag the run (tags it has already are kept once); returns the run's tags."""
    require_role(user, run.project.team_id, Role.MEMBER)
    tags = clean_tags(list(names))
    with transaction.atomic():
        # The run's row lock serialises two people tagging the same run, so the cap holds.
        Run.objects.select_for_update().filter(pk=run.pk).values_list("pk").first()
        have = set(RunTag.objects.filter(run=run).values_list("name", flat=True))
        new = [t for t in tags if t not in have]
        if len(have) + len(new) > MAX_TAGS_PER_RUN:
            raise InputError({"tags": f"a run has at most {MAX_TAGS_PER_RUN} tags"})
        RunTag.objects.bulk_create([RunTag(run=run, name=t) for t in new], ignore_conflicts=True)
    return run_tags(run)


def remove_tags(*, user: AbstractBaseUser, run: Run, names: Iterable[str]) -> list[str]:
    """Take tags off the run (one it does not have is no error); returns the run's tags."""
    require_role(user, run.project.team_id, Role.MEMBER)
    tags = clean_tags(list(names))
    RunTag.objects.filter(run=run, name__in=tags).delete()
    return run_tags(run)


def run_tags(run: Run) -> list[str]:
    return list(RunTag.objects.filter(run=run).order_by("name").values_list("name", flat=True))


def save_note(*, user: AbstractBaseUser, run: Run, text: object) -> NoteRevision:
    """Store a new version of the run's note; the oldest versions past ``NOTE_HISTORY`` go."""
    require_role(user, run.project.team_id, Role.MEMBER)
    if not isinstance(text, str):
        raise InputError({"text": "must be a string of markdown"})
    text = text.replace("\r\n", "\n").strip()
    if len(text) > NOTE_MAX_LENGTH:
        raise InputError({"text": f"at most {NOTE_MAX_LENGTH} characters (got {len(text)})"})
    if "\x00" in text:
        raise InputError({"text": "must not contain NUL characters"})
    with transaction.atomic():
        Run.objects.select_for_update().filter(pk=run.pk).values_list("pk").first()
        revision = NoteRevision.objects.create(run=run, text=text, author=user)
        keep = NoteRevision.objects.filter(run=run).order_by("-id").values_list("id", flat=True)
        NoteRevision.objects.filter(run=run).exclude(id__in=list(keep[:NOTE_HISTORY])).delete()
    return revision
