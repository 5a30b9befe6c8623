"""What people add to a run to find and explain it: tags and a markdown note with its edits.

They live beside the run, not on it: the trainer's side writes the run row concurrently
(progress, status), and a tag or a note edit must never race with those writes.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from webapp.runs.models import Run

TAG_MAX_LENGTH = 40
NOTE_MAX_LENGTH = 20_000


class RunTag(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tags", db_index=False)
    name = models.CharField(max_length=TAG_MAX_LENGTH)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["run", "name"], name="unique_run_tag")]
        # The runs table filters by tag: "runs with tag X" reads this index, then joins runs.
        indexes = [models.Index(fields=["name", "run"], name="run_tag_name_run")]
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class NoteRevision(models.Model):
    """One saved version of a run's note; the newest is the note, the rest its short history."""

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="note_revisions", db_index=False)
    text = models.TextField()
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        indexes = [models.Index(fields=["run", "-id"], name="note_revision_run_id")]
        ordering = ["-id"]
