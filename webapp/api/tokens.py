"""The caller's own API tokens over the API: list, create (the secret is shown once), revoke."""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse
from ninja import Query, Router, Schema, Status
from pydantic import Field

from webapp.accounts.models import ApiToken
from webapp.accounts.selectors import tokens_of
from webapp.accounts.services import issue_api_token, revoke_api_token
from webapp.api.fields import Flag, OptionalWholeNumber, Text
from webapp.api.pages import PageQuery, keyset_page
from webapp.api.schemas import RequestBody, answers

router = Router(tags=["tokens"])


class TokenOut(Schema):
    id: int
    name: str
    prefix: str
    read_only: bool
    created_at: str | None
    last_used_at: str | None
    expires_at: str | None
    revoked_at: str | None


class NewToken(TokenOut):
    secret: str = Field(description="send as 'Authorization: Bearer <secret>'; shown this once")


class TokenList(Schema):
    tokens: list[TokenOut]
    next_cursor: str | None


class TokenIn(RequestBody):
    name: Text = ""
    expires_in_days: OptionalWholeNumber = Field(None, description="never expires when left out")
    read_only: Flag = Field(False, description="may only GET")


def token_json(token: ApiToken) -> dict[str, Any]:
    def when(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "id": token.id,
        "name": token.name,
        "prefix": token.prefix,
        "read_only": token.read_only,
        "created_at": when(token.created_at),
        "last_used_at": when(token.last_used_at),
        "expires_at": when(token.expires_at),
        "revoked_at": when(token.revoked_at),
    }


@router.get("tokens", response=answers({200: TokenList}), url_name="tokens")
def tokens(request: HttpRequest, params: Query[PageQuery]) -> dict[str, Any]:
    """Your tokens, newest first, revoked ones included."""
    page = keyset_page(tokens_of(request.user), ("-created_at", "-id"), params)
    return {"tokens": [token_json(t) for t in page.rows], "next_cursor": page.next_cursor}


@router.post("tokens", response=answers({201: NewToken}), url_name="tokens")
def new_token(request: HttpRequest, payload: TokenIn | None = None) -> Status:
    payload = payload or TokenIn()
    token, secret = issue_api_token(
        request.user, payload.name, expires_in_days=payload.expires_in_days, read_only=payload.read_only
    )
    return Status(201, {**token_json(token), "secret": secret})


@router.delete("tokens/{int:token_id}", response=answers({204: None}), url_name="token")
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    """Revoke one of your tokens (another's is a 404)."""
    revoke_api_token(user=request.user, token_id=token_id)
    return HttpResponse(status=204)
