"""A project created in a team at the moment the team is deleted (PostgreSQL, two connections).

Both writes lock the team's row, so one of them goes first and the other sees its outcome:
the delete first, and the project is a field error on ``team`` (it was a foreign-key
IntegrityError, a 500); the create first, and the delete is refused naming the project. Each
test holds one side inside its transaction until the other is seen waiting on a lock in
``pg_stat_activity`` (SQLite runs one writer at a time: there is no race to test there).
"""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection

from webapp.accounts import services as accounts
from webapp.accounts.models import Team
from webapp.input_errors import InputError
from webapp.projects import services as projects
from webapp.projects.models import Project

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _postgresql_only():
    if connection.vendor != "postgresql":
        pytest.skip("row locks are PostgreSQL's; SQLite runs one writer at a time")


def wait_for_a_lock_waiter(deadline_s: float = 10.0) -> bool:
    """True once another connection of this database waits on a lock (the other side is blocked)."""
    end = time.monotonic() + deadline_s
    with connection.cursor() as cursor:
        while time.monotonic() < end:
            # Inside a transaction the statistics views keep their first answer unless cleared.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()"
            )
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.02)
    return False


def in_thread(target, outcomes: dict, name: str) -> threading.Thread:
    def run() -> None:
        try:
            outcomes[name] = ("ok", target())
        except InputError as exc:
            outcomes[name] = ("field error", exc.errors)
        except Exception as exc:  # what the race used to raise (IntegrityError): the test fails on it
            outcomes[name] = ("crash", repr(exc))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_a_project_created_while_its_team_is_being_deleted_is_a_field_error(alice, team, monkeypatch):
    locked = threading.Event()
    seen_waiting: list[bool] = []
    real_check = accounts.team_projects_blocking_delete

    def check_once_the_create_waits(locked_team: Team) -> list[str]:
        # The delete holds the team's row here; the create, started now, must wait for it.
        locked.set()
        seen_waiting.append(wait_for_a_lock_waiter())
        return real_check(locked_team)

    monkeypatch.setattr(accounts, "team_projects_blocking_delete", check_once_the_create_waits)
    outcomes: dict = {}
    deleting = in_thread(lambda: accounts.delete_team(actor=alice, team=team), outcomes, "delete")
    assert locked.wait(10)
    creating = in_thread(
        lambda: projects.create_project(user=alice, name="late", team=team), outcomes, "create"
    )
    deleting.join(30)
    creating.join(30)
    assert seen_waiting == [True], outcomes
    assert outcomes["delete"] == ("ok", None)
    kind, errors = outcomes["create"]
    assert kind == "field error" and "no longer exists" in errors["team"]
    assert not Team.objects.filter(pk=team.pk).exists() and not Project.objects.exists()


def test_a_team_deleted_while_a_project_is_being_created_in_it_is_refused_naming_it(alice, team, monkeypatch):
    checked = threading.Event()
    seen_waiting: list[bool] = []
    real_require = projects.require_role

    def require_then_let_the_delete_in(user, team_id, role) -> None:
        # The create holds the team's row here; the delete, started now, must wait for it.
        real_require(user, team_id, role)
        checked.set()
        seen_waiting.append(wait_for_a_lock_waiter())

    monkeypatch.setattr(projects, "require_role", require_then_let_the_delete_in)
    outcomes: dict = {}
    creating = in_thread(
        lambda: projects.create_project(user=alice, name="first", team=team), outcomes, "create"
    )
    assert checked.wait(10)
    deleting = in_thread(lambda: accounts.delete_team(actor=alice, team=team), outcomes, "delete")
    creating.join(30)
    deleting.join(30)
    assert seen_waiting == [True], outcomes
    assert outcomes["create"][0] == "ok"
    kind, errors = outcomes["delete"]
    assert kind == "field error" and "first" in errors["team"]
    assert Team.objects.filter(pk=team.pk).exists() and Project.objects.get().name == "first"
