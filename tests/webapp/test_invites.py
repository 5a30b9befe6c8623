"""Invite links: created by admins, single use, expiring, revocable; joining and signing up with one."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.exceptions import ImproperlyConfigured
from django.utils import timezone
from people import make_user

from webapp.accounts.models import ApiToken, Invite, Membership, Role
from webapp.audit.models import AuditEvent
from webapp.env import env_bool

pytestmark = pytest.mark.django_db
PASSWORD = "a-long-enough-passphrase-1"


@pytest.fixture
def invite_link(api, alice, team):
    def create(role: str = "member") -> dict:
        response = api(alice, "POST", f"/api/v1/teams/{team.id}/invites", {"role": role})
        assert response.status_code == 201, response.content
        return response.json()

    return create


def test_admin_creates_an_invite_link_that_expires_in_seven_days(invite_link, team):
    body = invite_link("viewer")
    invite = Invite.objects.get(pk=body["id"])
    assert body["url"].endswith(f"/invites/{body['token']}/") and body["url"].startswith("http")
    assert invite.role == Role.VIEWER and invite.token_hash == ApiToken.hash(body["token"])
    assert body["token"] not in str(list(Invite.objects.values()))  # only the hash is stored
    assert abs(invite.expires_at - timezone.now() - timedelta(days=7)) < timedelta(minutes=1)
    assert AuditEvent.objects.filter(team=team, action="member.invited").count() == 1


def test_pending_invites_are_listed_to_admins_only(api, invite_link, alice, bob, team):
    invite_link()
    assert len(api(alice, "GET", f"/api/v1/teams/{team.id}/invites").json()["invites"]) == 1
    assert api(bob, "GET", f"/api/v1/teams/{team.id}/invites").status_code == 403
    assert api(bob, "POST", f"/api/v1/teams/{team.id}/invites", {"role": "admin"}).status_code == 403


def test_an_invite_role_must_be_a_role(api, alice, team):
    response = api(alice, "POST", f"/api/v1/teams/{team.id}/invites", {"role": "owner"})
    assert response.status_code == 400 and "role" in response.json()["errors"]
    response = api(
        alice, "POST", f"/api/v1/teams/{team.id}/invites", {"role": "member", "expires_in_days": 0}
    )
    assert response.status_code == 400 and "expires_in_days" in response.json()["errors"]
    assert not Invite.objects.exists()


def test_following_the_link_signed_in_joins_with_its_role(client_for, invite_link, charlie, team):
    body = invite_link("viewer")
    client = client_for(charlie)
    page = client.get(f"/invites/{body['token']}/")
    assert page.status_code == 200 and b"Join ml" in page.content
    response = client.post(f"/invites/{body['token']}/")
    assert response.status_code == 302 and response["Location"] == f"/teams/{team.id}/"
    assert Membership.objects.get(team=team, user=charlie).role == Role.VIEWER
    assert AuditEvent.objects.get(action="member.joined").actor == charlie


def test_an_invite_is_single_use(api, invite_link, charlie, team):
    body = invite_link()
    assert api(charlie, "POST", f"/api/v1/invites/{body['token']}/accept").status_code == 201
    dora = make_user("dora", None)
    response = api(dora, "POST", f"/api/v1/invites/{body['token']}/accept")
    assert response.status_code == 400 and "already used" in response.json()["errors"]["token"]
    assert not Membership.objects.filter(user=dora).exists()


def test_an_expired_invite_is_refused_with_a_clear_message(client_for, api, invite_link, charlie):
    body = invite_link()
    Invite.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = api(charlie, "POST", f"/api/v1/invites/{body['token']}/accept")
    assert response.status_code == 400 and "expired" in response.json()["errors"]["token"]
    page = client_for(charlie).get(f"/invites/{body['token']}/")
    assert page.status_code == 410 and b"expired" in page.content


def test_a_revoked_invite_no_longer_works(api, client_for, invite_link, alice, charlie, team):
    body = invite_link()
    assert api(alice, "DELETE", f"/api/v1/teams/{team.id}/invites/{body['id']}").status_code == 204
    assert api(alice, "GET", f"/api/v1/teams/{team.id}/invites").json()["invites"] == []
    response = api(charlie, "POST", f"/api/v1/invites/{body['token']}/accept")
    assert response.status_code == 400 and "revoked" in response.json()["errors"]["token"]
    again = api(alice, "DELETE", f"/api/v1/teams/{team.id}/invites/{body['id']}")
    assert again.status_code == 400 and "already" in again.json()["errors"]["invite"]


def test_revoking_on_the_web(client_for, invite_link, alice, team):
    body = invite_link()
    response = client_for(alice).post(f"/teams/{team.id}/invites/{body['id']}/revoke/")
    assert response.status_code == 302 and Invite.objects.get().revoked_at is not None


def test_another_teams_invite_is_a_404_to_revoke(api, invite_link, charlie, other_team):
    body = invite_link()
    assert api(charlie, "DELETE", f"/api/v1/teams/{other_team.id}/invites/{body['id']}").status_code == 404
    assert Invite.objects.get().revoked_at is None


def test_a_member_cannot_accept_an_invite_to_their_own_team(api, invite_link, bob):
    body = invite_link("admin")
    response = api(bob, "POST", f"/api/v1/invites/{body['token']}/accept")
    assert response.status_code == 400 and "already a member" in response.json()["errors"]["token"]
    assert Membership.objects.get(user=bob).role == Role.VIEWER


def test_unknown_or_hostile_tokens_are_refused(api, client, charlie):
    for token in ("nope", "inv_" + "x" * 200, "inv_%00"):
        response = api(charlie, "POST", f"/api/v1/invites/{token}/accept")
        assert response.status_code in (400, 404), token
    assert client.get("/invites/inv_unknown/").status_code == 404


def test_a_new_person_signs_up_from_the_link_and_lands_in_the_team(client, invite_link, team, project):
    body = invite_link("member")
    page = client.get(f"/invites/{body['token']}/")
    assert page.status_code == 200 and b"Create your account" in page.content
    response = client.post(
        f"/invites/{body['token']}/", {"username": "erin", "password": PASSWORD, "password_again": PASSWORD}
    )
    assert response.status_code == 302 and response["Location"] == f"/teams/{team.id}/"
    erin = get_user_model().objects.get(username="erin")
    assert Membership.objects.get(user=erin).role == Role.MEMBER
    assert b"llm" in client.get(f"/projects/{project.id}/").content  # signed in, and sees the project


def test_sign_up_errors_name_the_field_and_use_nothing_up(client, invite_link, alice):
    body = invite_link()
    url = f"/invites/{body['token']}/"
    weak = client.post(url, {"username": "erin", "password": "short", "password_again": "short"})
    assert weak.status_code == 400 and b"too short" in weak.content
    taken = client.post(url, {"username": "ALICE", "password": PASSWORD, "password_again": PASSWORD})
    assert taken.status_code == 400 and b"is taken" in taken.content
    mismatch = client.post(url, {"username": "erin", "password": PASSWORD, "password_again": PASSWORD + "x"})
    assert mismatch.status_code == 400 and b"does not match" in mismatch.content
    hostile = client.post(url, {"username": "a b<script>", "password": PASSWORD, "password_again": PASSWORD})
    assert hostile.status_code == 400 and b"<script>" not in hostile.content
    assert not get_user_model().objects.filter(username="erin").exists()
    assert Invite.objects.get().accepted_at is None


def test_sign_up_without_an_invite_is_closed_unless_the_operator_opens_it(client, settings):
    response = client.post("/signup/", {"username": "erin", "password": PASSWORD, "password_again": PASSWORD})
    assert response.status_code == 403 and b"invite link" in response.content
    assert not get_user_model().objects.filter(username="erin").exists()
    settings.OPEN_SIGNUP = True
    response = client.post("/signup/", {"username": "erin", "password": PASSWORD, "password_again": PASSWORD})
    assert response.status_code == 302
    assert get_user_model().objects.get(username="erin").memberships.count() == 0


def test_open_signup_is_read_from_the_environment(monkeypatch):
    monkeypatch.setenv("RUNWRIGHT_OPEN_SIGNUP", "1")
    assert env_bool("RUNWRIGHT_OPEN_SIGNUP", False) is True
    monkeypatch.setenv("RUNWRIGHT_OPEN_SIGNUP", "maybe")
    with pytest.raises(ImproperlyConfigured, match="RUNWRIGHT_OPEN_SIGNUP"):
        env_bool("RUNWRIGHT_OPEN_SIGNUP", False)


def test_web_invite_form_shows_the_link_once(client_for, alice, team):
    page = client_for(alice).post(f"/teams/{team.id}/invites/", {"role": "viewer", "expires_in_days": 3})
    assert page.status_code == 200 and b"shown only once" in page.content
    invite = Invite.objects.get()
    assert invite.role == Role.VIEWER
    assert timedelta(days=2) < invite.expires_at - timezone.now() <= timedelta(days=3)
    bad = client_for(alice).post(f"/teams/{team.id}/invites/", {"role": "owner", "expires_in_days": "x"})
    assert bad.status_code == 400 and b"role" in bad.content and b"expires_in_days" in bad.content


def test_someone_with_an_account_logs_in_from_the_link_and_joins(client, invite_link, charlie, team):
    body = invite_link()
    path = f"/invites/{body['token']}/"
    assert f'href="/login/?next={path}"'.encode() in client.get(path).content
    response = client.post("/login/", {"username": "charlie", "password": "charlie-password-1", "next": path})
    assert response.status_code == 302 and response["Location"] == path
    assert b"Join as charlie" in client.get(path).content
    assert client.post(path).status_code == 302
    assert Membership.objects.get(team=team, user=charlie).role == Role.MEMBER
