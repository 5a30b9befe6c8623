"""Tags and the note of a run over the API (members write, viewers read).

``GET runs/<id>/tags`` → ``{"id", "tags"}``; ``POST`` with ``{"tags": ["a", "b"]}`` adds them,
``DELETE`` with the same body (or ``?tag=a&tag=b``) removes them; both answer the run's
tags. ``GET runs/<id>/note`` → ``{"text", "html", "author", "updated_at", "history"}``;
``POST`` with ``{"text": "markdown"}`` saves a new version.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest
from ninja import Query, Router, Schema
from pydantic import Field

from webapp.annotations.selectors import note_of
from webapp.annotations.services import add_tags, remove_tags, run_tags, save_note
from webapp.api.auth import ApiAuth
from webapp.api.lookups import run_member, run_of
from webapp.api.schemas import RequestBody, answers
from webapp.input_errors import InputError

router = Router(tags=["tags and notes"])
READER = ApiAuth(guard=run_of)
MEMBER = ApiAuth(guard=run_member)
TAGS_EXAMPLE = 'a list of tags, e.g. {"tags": ["baseline"]}'


class Tags(Schema):
    id: int
    tags: list[str]


class TagsIn(RequestBody):
    tags: list[Any] | None = Field(None, description="tag names")


class TagQuery(Schema):
    tag: list[str] = Field([], description="tags to remove, instead of a body")


def _names(payload: TagsIn | None) -> list[Any]:
    names = payload.tags if payload else None
    if names is None:
        raise InputError({"tags": f"required: {TAGS_EXAMPLE}"})
    return names


@router.get("runs/{int:run_id}/tags", response=answers({200: Tags}), url_name="run_tags", auth=READER)
def get_tags(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = run_of(request, run_id)
    return {"id": run.id, "tags": run_tags(run)}


@router.post("runs/{int:run_id}/tags", response=answers({200: Tags}), url_name="run_tags", auth=MEMBER)
def tag_run(request: HttpRequest, run_id: int, payload: TagsIn | None = None) -> dict[str, Any]:
    """Add tags; answers all the run's tags."""
    run = run_of(request, run_id)
    return {"id": run.id, "tags": add_tags(user=request.user, run=run, names=_names(payload))}


@router.delete("runs/{int:run_id}/tags", response=answers({200: Tags}), url_name="run_tags", auth=MEMBER)
def untag_run(
    request: HttpRequest, run_id: int, params: Query[TagQuery], payload: TagsIn | None = None
) -> dict[str, Any]:
    """Remove tags named in the body or by ``?tag=``; answers the tags left."""
    run = run_of(request, run_id)
    if (payload is None or payload.tags is None) and params.tag:
        payload = TagsIn(tags=params.tag)
    return {"id": run.id, "tags": remove_tags(user=request.user, run=run, names=_names(payload))}


class Revision(Schema):
    id: int
    text: str
    author: str | None
    created_at: str


class Note(Schema):
    id: int
    text: str
    html: str
    author: str | None
    updated_at: str | None
    history: list[Revision]


class NoteIn(RequestBody):
    text: Any = Field(
        None, description="the note in markdown (required)", json_schema_extra={"type": "string"}
    )


@router.get("runs/{int:run_id}/note", response=answers({200: Note}), url_name="run_note", auth=READER)
def get_note(request: HttpRequest, run_id: int) -> dict[str, Any]:
    run = run_of(request, run_id)
    return {"id": run.id, **note_of(run)}


@router.post("runs/{int:run_id}/note", response=answers({200: Note}), url_name="run_note", auth=MEMBER)
def save_run_note(request: HttpRequest, run_id: int, payload: NoteIn | None = None) -> dict[str, Any]:
    """Save a new version of the note; earlier ones stay in ``history``."""
    run = run_of(request, run_id)
    if payload is None or "text" not in payload.model_fields_set:
        raise InputError({"text": 'required: the note in markdown, e.g. {"text": "**why** this run"}'})
    save_note(user=request.user, run=run, text=payload.text)
    return {"id": run.id, **note_of(run)}
