"""Team admins rename and delete their team; the login page offers sign-up only when it is open."""

from __future__ import annotations

import pytest

from webapp.accounts.models import Invite, Membership, Team
from webapp.accounts.services import create_invite
from webapp.audit.models import Action, AuditEvent
from webapp.projects.models import Project

pytestmark = pytest.mark.django_db


def test_creating_a_team_is_audited_in_its_log(api, bob):
    response = api(bob, "POST", "/api/v1/teams", {"name": "bobs lab"})
    event = AuditEvent.objects.get(team_id=response.json()["id"])
    assert event.action == Action.TEAM_CREATED and event.actor == bob and event.target_label == "bobs lab"


def test_admin_renames_the_team_on_the_page_and_the_log_says_from_what(client_for, alice, team):
    response = client_for(alice).post(f"/teams/{team.id}/rename/", {"name": "  ml research "})
    assert response.status_code == 302
    team.refresh_from_db()
    assert team.name == "ml research"
    event = AuditEvent.objects.get(team=team, action=Action.TEAM_RENAMED)
    assert event.details == {"from": "ml", "to": "ml research"} and event.actor == alice


def test_rename_over_the_api_refuses_a_taken_or_hostile_name_naming_the_field(api, alice, team, other_team):
    for body, message in [
        ({"name": "RIVALS"}, "already exists"),
        ({"name": ""}, "must not be empty"),
        ({"name": "x" * 101}, "at most 100"),
        ({"name": "a\nb"}, "control characters"),
        ({"name": 7}, "must be a string"),
        ({}, "is required"),
    ]:
        response = api(alice, "PATCH", f"/api/v1/teams/{team.id}", body)
        assert response.status_code == 400 and message in response.json()["errors"]["name"], body
    response = api(alice, "PATCH", f"/api/v1/teams/{team.id}", {"name": "ml-2", "owner": "x"})
    assert response.status_code == 400 and "owner" in response.json()["errors"]
    assert Team.objects.get(pk=team.pk).name == "ml"
    ok = api(alice, "PATCH", f"/api/v1/teams/{team.id}", {"name": "ml-2"})
    assert ok.status_code == 200 and ok.json()["name"] == "ml-2"


def test_viewer_cannot_rename_or_delete_and_another_team_is_404(api, client_for, bob, charlie, team):
    assert api(bob, "PATCH", f"/api/v1/teams/{team.id}", {"name": "mine"}).status_code == 403
    assert api(bob, "DELETE", f"/api/v1/teams/{team.id}").status_code == 403
    assert api(charlie, "DELETE", f"/api/v1/teams/{team.id}").status_code == 404
    page = client_for(bob).get(f"/teams/{team.id}/delete/")
    assert page.status_code == 403 and b"admin role" in page.content
    assert Team.objects.get(pk=team.pk).name == "ml"


def test_a_team_with_projects_is_not_deleted_and_the_answer_lists_them(api, client_for, alice, team, project):
    Project.objects.create(team=team, name="vision", created_by=alice)
    response = api(alice, "DELETE", f"/api/v1/teams/{team.id}")
    assert response.status_code == 400
    assert "llm, vision" in response.json()["errors"]["team"]
    page = client_for(alice).get(f"/teams/{team.id}/delete/").content.decode()
    assert "llm" in page and "vision" in page and 'id="confirm-delete"' not in page
    refused = client_for(alice).post(f"/teams/{team.id}/delete/")
    assert refused.status_code == 400 and b"move them to another team" in refused.content
    assert Team.objects.filter(pk=team.pk).exists()


def test_admin_deletes_an_empty_team_after_confirming_and_the_log_entry_outlives_it(
    client_for, alice, bob, team
):
    create_invite(actor=alice, team=team)
    confirm = client_for(alice).get(f"/teams/{team.id}/delete/")
    assert confirm.status_code == 200 and b'id="confirm-delete"' in confirm.content
    assert Team.objects.filter(pk=team.pk).exists()  # the GET only asks
    response = client_for(alice).post(f"/teams/{team.id}/delete/")
    assert response.status_code == 302 and response["Location"] == "/teams/"
    assert not Team.objects.filter(pk=team.pk).exists()
    assert not Membership.objects.filter(user=bob).exists() and not Invite.objects.exists()
    event = AuditEvent.objects.get(action=Action.TEAM_DELETED)
    assert event.team_id is None and event.target_label == "ml" and event.actor == alice
    assert event.details == {"name": "ml", "members": 2}
    # The team's earlier entries stay too, for the operator; no team's log page shows them.
    assert AuditEvent.objects.filter(action=Action.MEMBER_INVITED, team=None).exists()


def test_delete_over_the_api_answers_204_and_the_team_is_gone(api, alice, team):
    assert api(alice, "DELETE", f"/api/v1/teams/{team.id}").status_code == 204
    assert api(alice, "GET", f"/api/v1/teams/{team.id}").status_code == 404


def test_team_page_offers_rename_and_delete_to_admins_only(client_for, alice, bob, team):
    admin_page = client_for(alice).get(f"/teams/{team.id}/").content.decode()
    assert f"/teams/{team.id}/rename/" in admin_page and f"/teams/{team.id}/delete/" in admin_page
    viewer_page = client_for(bob).get(f"/teams/{team.id}/").content.decode()
    assert "/rename/" not in viewer_page and "/delete/" not in viewer_page


def test_login_page_links_to_sign_up_only_when_the_operator_opened_it(client, settings):
    settings.OPEN_SIGNUP = False
    assert b'id="signup-link"' not in client.get("/login/").content
    settings.OPEN_SIGNUP = True
    page = client.get("/login/").content.decode()
    assert 'id="signup-link"' in page and 'href="/signup/"' in page


def test_audit_log_names_an_unnamed_token_by_its_prefix_and_shows_no_python_none(client_for, alice, team):
    from webapp.accounts.services import issue_api_token

    token, _ = issue_api_token(alice)
    event = AuditEvent.objects.get(team=team, action=Action.TOKEN_CREATED)
    assert event.target_label == token.prefix
    page = client_for(alice).get(f"/teams/{team.id}/audit/").content.decode()
    assert "expires_in_days=—" in page and "read_only=no" in page
    assert "None" not in page and "object (" not in page
