"""Request and response models shared by the API's routers."""

from __future__ import annotations

from typing import Any

from ninja import Schema
from pydantic import BaseModel, ConfigDict, Field


class RequestBody(Schema):
    """A request body: a field the endpoint does not take is refused, naming it."""

    model_config = ConfigDict(extra="forbid")


class NoFields(RequestBody):
    """The body of an action (cancel, resume, ...): none, or an empty object."""


class Refusal(Schema):
    """Every 4xx: ``error`` for a person; on a 400 ``errors`` maps each field path to what to fix."""

    model_config = ConfigDict(extra="allow")

    error: str
    errors: dict[str, str] | None = Field(None, description="field path -> message (400 only)")


class Open(BaseModel):
    """A response object whose documented fields may be joined by more (presenters grow).

    A plain pydantic model: ninja's ``Schema`` reads attributes through its getter and drops
    the keys it does not declare.
    """

    model_config = ConfigDict(extra="allow")


# What every authenticated operation may answer besides its success.
REFUSALS: dict[int, Any] = {400: Refusal, 401: Refusal, 403: Refusal, 404: Refusal}


def answers(success: dict[int, Any], *extra: int) -> dict[int, Any]:
    """``{200: Model}`` with the refusals every operation may give (and ``extra`` codes, e.g. 409)."""
    return {**success, **REFUSALS, **{code: Refusal for code in extra}}
