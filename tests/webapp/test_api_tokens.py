"""API tokens: made on the account page or the API, shown once, expiring, revocable, optionally read-only."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from webapp.accounts.models import ApiToken
from webapp.accounts.services import create_api_token
from webapp.audit.models import AuditEvent

pytestmark = pytest.mark.django_db


def bearer(secret: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {secret}"}


def test_create_over_the_api_shows_the_secret_once(api, client, alice):
    response = api(alice, "POST", "/api/v1/tokens", {"name": "ci", "expires_in_days": 30, "read_only": True})
    assert response.status_code == 201
    body = response.json()
    assert body["secret"].startswith(body["prefix"]) and body["read_only"] is True and body["name"] == "ci"
    listed = client.get("/api/v1/tokens", **bearer(body["secret"])).json()["tokens"]
    assert "secret" not in listed[0] and body["secret"] not in str(listed)
    ci = next(t for t in listed if t["name"] == "ci")
    assert ci["prefix"] == body["prefix"] and ci["last_used_at"] is not None and ci["expires_at"]


def test_a_token_answers_401_once_revoked(api, client, alice):
    secret = create_api_token(alice, "laptop")
    token = ApiToken.objects.get(name="laptop")
    assert client.get("/api/v1/projects", **bearer(secret)).status_code == 200
    assert api(alice, "DELETE", f"/api/v1/tokens/{token.id}").status_code == 204
    response = client.get("/api/v1/projects", **bearer(secret))
    assert response.status_code == 401 and "valid token" in response.json()["error"]


def test_an_expired_token_answers_401(client, alice):
    secret = create_api_token(alice, "old", expires_in_days=1)
    ApiToken.objects.filter(name="old").update(expires_at=timezone.now() - timedelta(seconds=1))
    assert client.get("/api/v1/projects", **bearer(secret)).status_code == 401


def test_a_read_only_token_reads_but_every_write_is_403(client, alice, project):
    secret = create_api_token(alice, "dash", read_only=True)
    assert client.get("/api/v1/projects", **bearer(secret)).status_code == 200
    response = client.post(
        "/api/v1/projects", {"name": "new"}, content_type="application/json", **bearer(secret)
    )
    assert response.status_code == 403 and "read-only" in response.json()["error"]
    token = ApiToken.objects.get(name="dash")
    assert client.delete(f"/api/v1/tokens/{token.id}", **bearer(secret)).status_code == 403
    assert not ApiToken.objects.get(name="dash").revoked_at


def test_one_person_cannot_revoke_anothers_token(api, alice, charlie):
    create_api_token(alice, "alices")
    token = ApiToken.objects.get(name="alices")
    assert api(charlie, "DELETE", f"/api/v1/tokens/{token.id}").status_code == 404
    assert ApiToken.objects.get(pk=token.pk).revoked_at is None


def test_bad_token_fields_name_the_field(api, alice):
    cases = [
        ({"name": "x", "expires_in_days": 0}, "expires_in_days"),
        ({"name": "x", "expires_in_days": "soon"}, "expires_in_days"),
        ({"name": "x", "read_only": "yes"}, "read_only"),
        ({"name": "x" * 101}, "name"),
        ({"name": "x", "scope": "all"}, "scope"),
    ]
    before = ApiToken.objects.count()
    for body, field in cases:
        response = api(alice, "POST", "/api/v1/tokens", body)
        assert response.status_code == 400 and field in response.json()["errors"], body
    assert ApiToken.objects.count() == before + len(cases)  # only the callers' own bearer tokens


def test_tokens_page_creates_lists_and_revokes(client_for, alice):
    client = client_for(alice)
    page = client.post("/account/tokens/", {"name": "notebook", "expires_in_days": "7", "read_only": "on"})
    assert page.status_code == 200 and b"shown only once" in page.content
    token = ApiToken.objects.get(name="notebook")
    assert token.read_only and token.expires_at is not None
    assert token.prefix.encode() in page.content
    listing = client.get("/account/tokens/").content
    assert b"notebook" in listing and b"read-only" in listing and b"shown only once" not in listing
    assert client.post(f"/account/tokens/{token.id}/revoke/").status_code == 302
    assert ApiToken.objects.get(pk=token.pk).revoked_at is not None


def test_tokens_page_refuses_a_bad_expiry_with_the_field(client_for, alice):
    page = client_for(alice).post("/account/tokens/", {"name": "n", "expires_in_days": "-3"})
    assert page.status_code == 400 and b"greater than or equal to 1" in page.content
    assert not ApiToken.objects.filter(name="n").exists()


def test_creating_and_revoking_are_in_the_audit_log(api, alice, team):
    body = api(alice, "POST", "/api/v1/tokens", {"name": "audited"}).json()
    api(alice, "DELETE", f"/api/v1/tokens/{body['id']}")
    created = AuditEvent.objects.filter(team=team, action="token.created", target_id=str(body["id"]))
    revoked = AuditEvent.objects.filter(team=team, action="token.revoked", target_id=str(body["id"]))
    assert created.count() == 1 and revoked.count() == 1


def test_create_token_command_still_prints_a_working_token(client, alice, capsys):
    call_command("create_token", "alice", "--name", "cli")
    secret = capsys.readouterr().out.strip()
    assert client.get("/api/v1/teams", **bearer(secret)).status_code == 200


def test_create_token_command_takes_expiry_and_read_only(alice, capsys):
    call_command("create_token", "alice", "--name", "ro", "--expires-in-days", "3", "--read-only")
    token = ApiToken.objects.get(name="ro")
    assert token.read_only and timedelta(days=2) < token.expires_at - timezone.now() <= timedelta(days=3)
    with pytest.raises(CommandError, match="--expires-in-days: must be between 1 and"):
        call_command("create_token", "alice", "--expires-in-days", "0")
