"""The team's audit log: what is recorded, and who may read it, with which filters."""

from __future__ import annotations

import pytest

from webapp.audit.models import AuditEvent
from webapp.audit.services import record_action


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
