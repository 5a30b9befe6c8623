"""Reads of tags and notes; the run passed in was already checked visible (``runs.selectors.run_for``)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from webapp.annotations.models import NoteRevision, RunTag
from webapp.annotations.rendering import render_note
from webapp.projects.models import Project
from webapp.runs.models import Run


def tags_by_run(run_ids: Iterable[int]) -> dict[int, list[str]]:
    """The tags of each run, in one query (for a page of the runs table)."""
    out: dict[int, list[str]] = {}
    for run_id, name in (
        RunTag.objects.filter(run_id__in=list(run_ids)).order_by("name").values_list("run_id", "name")
    ):
        out.setdefault(run_id, []).append(name)
    return out


def project_tags(project: Project) -> list[str]:
    """Every tag used in the project, for the table's tag filter."""
    names = RunTag.objects.filter(run__project=project).values_list("name", flat=True).distinct()
    return sorted(names)


def note_of(run: Run) -> dict[str, Any]:
    """The note (markdown and its safe HTML) and its earlier versions, newest first."""
    revisions = list(NoteRevision.objects.filter(run=run).select_related("author").order_by("-id"))
    history = [
        {
            "id": r.id,
            "text": r.text,
            "author": r.author.get_username() if r.author else None,
            "created_at": r.created_at.isoformat(),
        }
        for r in revisions
    ]
    current = revisions[0] if revisions else None
    return {
        "text": current.text if current else "",
        "html": render_note(current.text) if current else "",
        "author": history[0]["author"] if current else None,
        "updated_at": history[0]["created_at"] if current else None,
        "history": history,
    }
