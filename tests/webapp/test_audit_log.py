"""The team's audit log: what is recorded, and who may read it, with which filters."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime

import pytest

from webapp.audit.models import AuditEvent
from webapp.audit.services import record_action

TASK_YAML = """task: audit_trivia
dataset_path: json
dataset_kwargs:
  data_files:
    test: data/test.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Q: {{question}}\\nA:"
doc_to_choice: "{{choices}}"
doc_to_target: label
metric_list:
  - metric: acc
"""
DOCS = "\n".join(json.dumps({"question": f"q{i}", "choices": ["x", "y"], "label": i % 2}) for i in range(4))


@pytest.mark.django_db
def test_record_action_copies_the_target_and_actor(team, alice, project):
    event = record_action(team=team, actor=alice, action="project.moved", target=project, details={"to": "x"})
    event.refresh_from_db()
    assert (event.team_id, event.actor_id, event.actor_label) == (team.id, alice.id, "alice")
    assert (event.target_type, event.target_id, event.target_label) == ("project", str(project.id), "llm")
    assert event.details == {"to": "x"}


@pytest.mark.django_db
def test_record_action_refuses_an_undeclared_action(team, alice):
    with pytest.raises(ValueError, match="unknown audit action"):
        record_action(team=team, actor=alice, action="run.exploded")
    assert not AuditEvent.objects.exists()


@pytest.mark.django_db
def test_an_entry_outlives_its_actor(team, alice):
    record_action(team=team, actor=alice, action="member.joined", target=alice)
    alice.delete()
    event = AuditEvent.objects.get()
    assert event.actor is None and event.actor_label == "alice" and event.target_label == "alice"


@pytest.fixture
def log(team, alice, bob, project):
    """Three entries: two by Alice on different days, one by Bob."""
    old = record_action(team=team, actor=alice, action="member.invited")
    AuditEvent.objects.filter(pk=old.pk).update(created_at=datetime(2026, 11, 2, 12, tzinfo=UTC))
    record_action(team=team, actor=alice, action="project.moved", target=project)
    record_action(team=team, actor=bob, action="member.joined", target=bob)
    return team


@pytest.mark.django_db
def test_admins_read_the_log_filtered_by_person_action_and_date(api, alice, log):
    def actions(query: str) -> list[str]:
        response = api(alice, "GET", f"/api/v1/teams/{log.id}/audit?{query}")
        assert response.status_code == 200, response.content
        return [e["action"] for e in response.json()["events"] if not e["action"].startswith("token.")]

    assert actions("") == ["member.joined", "project.moved", "member.invited"]
    assert actions("person=bob") == ["member.joined"]
    assert actions("action=project.moved") == ["project.moved"]
    assert actions("from=2026-11-01&to=2026-11-03") == ["member.invited"]
    assert actions("person=alice&from=2026-11-03") == ["project.moved"]


@pytest.mark.django_db
def test_bad_filters_are_a_clear_400_naming_the_field(api, client_for, alice, log):
    for query, field in [
        ("action=run.exploded", "action"),
        ("from=yesterday", "from"),
        ("to=2026-13-01", "to"),
        ("from=2026-12-02&to=2026-12-01", "to"),
        ("limit=0", "limit"),
        ("from=20261201", "from"),
    ]:
        response = api(alice, "GET", f"/api/v1/teams/{log.id}/audit?{query}")
        assert response.status_code == 400 and field in response.json()["errors"], query
        page = client_for(alice).get(f"/teams/{log.id}/audit/?{query}")
        assert page.status_code == 400 and f"{field}:".encode() in page.content, query


@pytest.mark.django_db
def test_the_log_page_shows_entries_and_keeps_the_filters(client_for, alice, log):
    page = client_for(alice).get(f"/teams/{log.id}/audit/?person=bob").content.decode()
    table = page[page.index('id="audit-events"') :]
    assert '<span class="tag">member.joined</span>' in table and "project.moved" not in table
    assert '<option value="bob" selected>' in page


@pytest.mark.django_db
def test_the_log_is_for_admins_only(api, client_for, bob, charlie, log):
    response = api(bob, "GET", f"/api/v1/teams/{log.id}/audit")
    assert response.status_code == 403 and "admin role" in response.json()["error"]
    assert client_for(bob).get(f"/teams/{log.id}/audit/").status_code == 403
    assert api(charlie, "GET", f"/api/v1/teams/{log.id}/audit").status_code == 404


@pytest.mark.django_db
def test_launching_and_cancelling_a_run_are_recorded(api, alice, team, project, sent_tasks):
    run_id = api(alice, "POST", f"/api/v1/projects/{project.id}/runs", {"preset": "tiny-cpu"}).json()["id"]
    api(alice, "POST", f"/api/v1/runs/{run_id}/cancel")
    api(alice, "POST", f"/api/v1/runs/{run_id}/cancel")  # nothing left to cancel: not recorded twice
    events = AuditEvent.objects.filter(team=team, target_type="run", target_id=str(run_id))
    assert sorted(events.values_list("action", flat=True)) == ["run.cancelled", "run.launched"]
    assert all(e.actor == alice for e in events)


@pytest.mark.django_db
def test_a_refused_launch_records_nothing(api, bob, project):
    assert api(bob, "POST", f"/api/v1/projects/{project.id}/runs", {"preset": "tiny-cpu"}).status_code == 403
    assert not AuditEvent.objects.filter(action="run.launched").exists()


@pytest.mark.django_db
def test_an_uploaded_task_folder_is_recorded(client_for, alice, team, project, settings, tmp_path):
    settings.DATA_DIR = tmp_path
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("trivia/trivia.yaml", TASK_YAML)
        z.writestr("trivia/data/test.jsonl", DOCS)
    archive.seek(0)
    archive.name = "trivia.zip"
    response = client_for(alice).post(f"/projects/{project.id}/evals/tasks", {"archive": archive})
    assert response.status_code == 302, response.content[:500]
    event = AuditEvent.objects.get(action="tasks.uploaded")
    assert event.actor == alice and event.team == team and event.details["tasks"] == ["audit_trivia"]


@pytest.mark.django_db
def test_the_log_pages_back_without_repeating_or_skipping(api, client_for, alice, team):
    made = [record_action(team=team, actor=alice, action="member.invited").id for _ in range(5)]
    seen, before = [], ""
    while True:
        body = api(
            alice, "GET", f"/api/v1/teams/{team.id}/audit?action=member.invited&limit=2{before}"
        ).json()
        seen += [e["id"] for e in body["events"]]
        if body["next_before"] is None:
            break
        before = f"&before={body['next_before']}"
    assert seen == sorted(made, reverse=True)
    page = client_for(alice).get(f"/teams/{team.id}/audit/?action=member.invited&limit=2").content.decode()
    assert f'href="?action=member.invited&amp;limit=2&amp;before={made[3]}" id="older"' in page


@pytest.mark.django_db
def test_a_cursor_from_another_team_is_refused(api, alice, charlie, other_team, team):
    theirs = record_action(team=other_team, actor=charlie, action="member.invited")
    response = api(alice, "GET", f"/api/v1/teams/{team.id}/audit?before={theirs.id}")
    assert response.status_code == 400 and "no such entry" in response.json()["errors"]["before"]
    assert api(alice, "GET", f"/api/v1/teams/{team.id}/audit?before=%D9%A1").status_code == 400
