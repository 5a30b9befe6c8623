"""Teams on the web and the API: creating one, the team page, roles, removing, leaving, moving projects."""

from __future__ import annotations

import contextlib
import threading

import pytest
from django.db import connection
from people import make_user

from webapp.accounts import services
from webapp.accounts.models import Membership, Role, Team
from webapp.accounts.services import change_role
from webapp.audit.models import AuditEvent
from webapp.input_errors import InputError
from webapp.projects.models import Project
from webapp.projects.services import move_project

pytestmark = pytest.mark.django_db


def test_anyone_signed_in_creates_a_team_and_is_its_first_admin(client_for, bob):
    response = client_for(bob).post("/teams/", {"name": "bobs lab"})
    team = Team.objects.get(name="bobs lab")
    assert response.status_code == 302 and response["Location"] == f"/teams/{team.id}/"
    assert team.memberships.get().user == bob and team.memberships.get().role == Role.ADMIN


def test_a_team_name_that_exists_is_a_field_error_on_the_form_and_the_api(client_for, api, alice, team):
    page = client_for(alice).post("/teams/", {"name": "ML"})
    assert page.status_code == 400 and b"already exists" in page.content
    response = api(alice, "POST", "/api/v1/teams", {"name": " ml "})
    assert response.status_code == 400 and "already exists" in response.json()["errors"]["name"]
    assert Team.objects.count() == 1


def test_hostile_team_names_are_refused_naming_the_field(api, alice):
    for name, message in [("", "must not be empty"), ("x" * 101, "at most 100"), ("a\x01b", "control")]:
        response = api(alice, "POST", "/api/v1/teams", {"name": name})
        assert response.status_code == 400 and message in response.json()["errors"]["name"], name
    assert api(alice, "POST", "/api/v1/teams", {"name": 5}).json()["errors"] == {"name": "must be a string"}


def test_team_page_lists_members_roles_invites_and_projects(client_for, api, alice, bob, team, project):
    api(alice, "POST", f"/api/v1/teams/{team.id}/invites", {"role": "viewer"})
    page = client_for(alice).get(f"/teams/{team.id}/").content.decode()
    assert "alice" in page and "bob" in page and "llm" in page
    assert "Pending invites" in page and "Audit log" in page and 'name="role"' in page


def test_a_viewer_sees_the_team_but_no_admin_controls(client_for, bob, team, project):
    page = client_for(bob).get(f"/teams/{team.id}/").content.decode()
    assert "llm" in page and "alice" in page
    assert "Pending invites" not in page and "Audit log" not in page and "Remove" not in page


def test_another_teams_page_is_a_404(client_for, charlie, team):
    assert client_for(charlie).get(f"/teams/{team.id}/").status_code == 404


def test_api_lists_teams_with_role_and_shows_one_with_members_and_projects(api, alice, bob, team, project):
    listed = api(bob, "GET", "/api/v1/teams").json()["teams"]
    assert [(t["name"], t["role"], t["members"]) for t in listed] == [("ml", "viewer", 2)]
    detail = api(bob, "GET", f"/api/v1/teams/{team.id}").json()
    assert [(m["user"]["username"], m["role"]) for m in detail["members"]] == [
        ("alice", "admin"),
        ("bob", "viewer"),
    ]
    assert detail["projects"] == [{"id": project.id, "name": "llm"}]


def test_admin_changes_a_role_and_the_log_records_it(api, alice, bob, team):
    response = api(alice, "PATCH", f"/api/v1/teams/{team.id}/members/{bob.id}", {"role": "member"})
    assert response.status_code == 200 and response.json()["role"] == "member"
    assert Membership.objects.get(team=team, user=bob).role == Role.MEMBER
    event = AuditEvent.objects.get(action="member.role_changed")
    assert event.details == {"from": "viewer", "to": "member"} and event.target_label == "bob"


def test_a_bad_role_names_the_field(api, client_for, alice, bob, team):
    response = api(alice, "PATCH", f"/api/v1/teams/{team.id}/members/{bob.id}", {"role": "owner"})
    assert response.status_code == 400 and "viewer, member, admin" in response.json()["errors"]["role"]
    assert api(alice, "PATCH", f"/api/v1/teams/{team.id}/members/{bob.id}", {}).json()["errors"]["role"]
    page = client_for(alice).post(f"/teams/{team.id}/members/{bob.id}/role/", {"role": "owner"})
    assert page.status_code == 400 and b"role" in page.content
    assert Membership.objects.get(team=team, user=bob).role == Role.VIEWER


def test_a_viewer_cannot_change_roles_or_remove_members(api, client_for, alice, bob, team):
    response = api(bob, "PATCH", f"/api/v1/teams/{team.id}/members/{bob.id}", {"role": "admin"})
    assert response.status_code == 403 and "admin role" in response.json()["error"]
    assert api(bob, "DELETE", f"/api/v1/teams/{team.id}/members/{alice.id}").status_code == 403
    assert client_for(bob).post(f"/teams/{team.id}/members/{alice.id}/remove/").status_code == 403
    assert Membership.objects.filter(team=team).count() == 2


def test_the_last_admin_cannot_be_demoted_or_leave(api, client_for, alice, team):
    response = api(alice, "PATCH", f"/api/v1/teams/{team.id}/members/{alice.id}", {"role": "member"})
    assert response.status_code == 400 and "at least one admin" in response.json()["errors"]["role"]
    response = api(alice, "DELETE", f"/api/v1/teams/{team.id}/members/{alice.id}")
    assert response.status_code == 400 and "last admin" in response.json()["errors"]["user"]
    page = client_for(alice).post(f"/teams/{team.id}/leave/")
    assert page.status_code == 400 and b"at least one admin" in page.content
    assert Membership.objects.get(team=team, user=alice).role == Role.ADMIN


def test_with_a_second_admin_the_first_may_step_down_and_leave(api, alice, team):
    dora = make_user("dora", team, Role.ADMIN)
    assert (
        api(alice, "PATCH", f"/api/v1/teams/{team.id}/members/{alice.id}", {"role": "member"}).status_code
        == 200
    )
    assert api(alice, "DELETE", f"/api/v1/teams/{team.id}/members/{alice.id}").status_code == 204
    assert list(team.memberships.values_list("user", flat=True)) == [dora.id]
    assert AuditEvent.objects.get(action="member.removed").details == {"role": "member", "left": True}


def test_a_member_leaves_on_the_web(client_for, bob, team):
    response = client_for(bob).post(f"/teams/{team.id}/leave/")
    assert response.status_code == 302 and response["Location"] == "/teams/"
    assert not Membership.objects.filter(team=team, user=bob).exists()
    assert client_for(bob).get(f"/teams/{team.id}/").status_code == 404


def test_admin_removes_a_member(client_for, api, alice, bob, team):
    assert client_for(alice).post(f"/teams/{team.id}/members/{bob.id}/remove/").status_code == 302
    assert not Membership.objects.filter(team=team, user=bob).exists()
    assert api(bob, "GET", f"/api/v1/teams/{team.id}").status_code == 404


def test_members_of_another_team_are_404_by_id(api, alice, charlie, team):
    assert (
        api(alice, "PATCH", f"/api/v1/teams/{team.id}/members/{charlie.id}", {"role": "viewer"}).status_code
        == 404
    )
    assert api(charlie, "GET", f"/api/v1/teams/{team.id}/members").status_code == 404


def test_admin_moves_a_project_to_another_team_they_administer(client_for, alice, team, project):
    lab = Team.objects.create(name="lab")
    Membership.objects.create(team=lab, user=alice, role=Role.ADMIN)
    response = client_for(alice).post(f"/teams/{team.id}/projects/{project.id}/move/", {"team": lab.id})
    assert response.status_code == 302
    project.refresh_from_db()
    assert project.team == lab
    assert AuditEvent.objects.filter(action="project.moved").count() == 2  # in both teams' logs


def test_a_project_moves_only_to_a_team_where_one_is_admin(client_for, alice, team, project):
    lab = Team.objects.create(name="lab")
    Membership.objects.create(team=lab, user=alice, role=Role.MEMBER)
    response = client_for(alice).post(f"/teams/{team.id}/projects/{project.id}/move/", {"team": lab.id})
    assert response.status_code == 400 and b"team" in response.content
    project.refresh_from_db()
    assert project.team == team


def test_a_project_does_not_move_onto_a_same_named_one(alice, team, project):
    lab = Team.objects.create(name="lab")
    Membership.objects.create(team=lab, user=alice, role=Role.ADMIN)
    Project.objects.create(team=lab, name="llm")
    with pytest.raises(InputError, match="already has a project named"):
        move_project(user=alice, project=project, team=lab)


def test_api_creates_a_project_in_a_chosen_team(api, alice, team):
    lab = Team.objects.create(name="lab")
    Membership.objects.create(team=lab, user=alice, role=Role.MEMBER)
    response = api(alice, "POST", "/api/v1/projects", {"name": "p", "team": lab.id})
    assert response.status_code == 201 and response.json()["team"]["id"] == lab.id


@pytest.mark.django_db(transaction=True)
def test_two_admins_demoting_each_other_at_once_leave_one_admin(team, alice, monkeypatch):
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")
    dora = make_user("dora", team, Role.ADMIN)
    # Each demotion waits here after its check until the other has checked too (or 2 s passed):
    # without the team lock both would see the other admin and both would step down.
    barrier = threading.Barrier(2)
    real_check = services._admins_left

    def checked_together(*args):
        left = real_check(*args)
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=2)
        return left

    monkeypatch.setattr(services, "_admins_left", checked_together)
    outcomes = []

    def demote(actor, target) -> None:
        try:
            change_role(actor=actor, team=team, user_id=target.id, role=Role.MEMBER)
            outcomes.append("demoted")
        except InputError:
            outcomes.append("refused")
        finally:
            connection.close()

    threads = [threading.Thread(target=demote, args=pair) for pair in ((alice, dora), (dora, alice))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(outcomes) == ["demoted", "refused"]
    assert Membership.objects.filter(team=team, role=Role.ADMIN).count() == 1


def _chain(api, user, path: str, key: str, name) -> list[list]:
    """Every page of ``path`` at two rows a page, each row as ``name(row)``."""
    pages, cursor = [], ""
    for _ in range(10):  # a cursor that never ends would loop forever
        response = api(user, "GET", path, {"limit": 2, "cursor": cursor})
        assert response.status_code == 200, response.content
        body = response.json()
        pages.append([name(row) for row in body[key]])
        cursor = body["next_cursor"]
        if not cursor:
            return pages
    raise AssertionError(f"no last page after 10: {pages}")


def test_members_are_paged_admins_first_without_gaps_or_repeats(api, alice, bob, team):
    for username, role in [("erin", Role.MEMBER), ("dave", Role.ADMIN), ("carol", Role.MEMBER)]:
        make_user(username, team, role)
    path = f"/api/v1/teams/{team.id}/members"
    pages = _chain(api, alice, path, "members", lambda row: row["user"]["username"])
    assert pages == [["alice", "dave"], ["carol", "erin"], ["bob"]]
    whole = api(alice, "GET", path).json()  # no limit: the first page is the whole small team, as before
    assert [m["user"]["username"] for m in whole["members"]] == [n for page in pages for n in page]
    assert whole["next_cursor"] is None


def test_invites_are_paged_newest_first_without_gaps_or_repeats(api, alice, team):
    made = [api(alice, "POST", f"/api/v1/teams/{team.id}/invites", {}).json()["id"] for _ in range(5)]
    pages = _chain(api, alice, f"/api/v1/teams/{team.id}/invites", "invites", lambda row: row["id"])
    assert [len(page) for page in pages] == [2, 2, 1]
    assert [i for page in pages for i in page] == sorted(made, reverse=True)


def test_a_cursor_of_another_list_is_a_400_naming_cursor(api, alice, team):
    for username in ("carol", "dave", "erin"):
        make_user(username, team)
        api(alice, "POST", f"/api/v1/teams/{team.id}/invites", {})
        Team.objects.create(name=f"{username}s team").memberships.create(user=alice, role=Role.ADMIN)
    teams_cursor = api(alice, "GET", "/api/v1/teams", {"limit": 1}).json()["next_cursor"]
    members = api(alice, "GET", f"/api/v1/teams/{team.id}/members", {"limit": 1}).json()
    for path, cursor in [
        ("invites", teams_cursor),  # a (name, id) cursor where a (created_at, id) one belongs
        ("members", teams_cursor),  # two values for a three-part order
        ("invites", members["next_cursor"]),
        ("members", "nonsense"),
    ]:
        response = api(alice, "GET", f"/api/v1/teams/{team.id}/{path}", {"cursor": cursor})
        assert response.status_code == 400, (path, cursor, response.content)
        assert "cursor" in response.json()["errors"], (path, cursor)
