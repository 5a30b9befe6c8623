"""The caller's own API tokens over the API: list, create (the secret is shown once), revoke."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse

from webapp.accounts.models import ApiToken
from webapp.accounts.selectors import tokens_of
from webapp.accounts.services import issue_api_token, revoke_api_token
from webapp.api.auth import api_view
from webapp.api.body import json_object
from webapp.api.fields import optional_whole_number, string
from webapp.input_errors import InputError


def token_json(token: ApiToken) -> dict:
    def when(value):
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


@api_view(("GET", "POST"))
def tokens(request: HttpRequest) -> JsonResponse:
    if request.method == "GET":
        return JsonResponse({"tokens": [token_json(t) for t in tokens_of(request.user)]})
    data = json_object(request, ("name", "expires_in_days", "read_only"))
    read_only = data.get("read_only", False)
    if not isinstance(read_only, bool):
        raise InputError({"read_only": "must be true or false"})
    token, secret = issue_api_token(
        request.user,
        string(data.get("name", ""), "name"),
        expires_in_days=optional_whole_number(data.get("expires_in_days"), "expires_in_days"),
        read_only=read_only,
    )
    return JsonResponse({**token_json(token), "secret": secret}, status=201)


@api_view(("DELETE",))
def token_revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    revoke_api_token(user=request.user, token_id=token_id)
    return HttpResponse(status=204)
