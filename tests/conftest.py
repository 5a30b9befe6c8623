"""Suite-wide setup and the people every suite tests with.

Alice administers team "ml", Bob is a viewer there, Charlie administers another
team. Each test session's data directory is chosen in webapp/settings.py,
because pytest-django loads the settings before this file is imported.
"""

from __future__ import annotations

import os
import tempfile

import pytest
from people import make_user

from webapp.accounts.models import Role, Team
from webapp.accounts.services import create_api_token
from webapp.projects.models import Project

# Torch in test processes shares two cores with trainers and workers.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Matmul route decisions (modelcore.kernels.matmul_routes) go to the session's data directory,
# never into the user's ~/.cache: a test must not depend on, or change, what an earlier run measured.
os.environ.setdefault(
    "RUNWRIGHT_MATMUL_ROUTES",
    os.path.join(os.environ.get("RUNWRIGHT_DATA_DIR") or tempfile.mkdtemp(), "matmul_routes.json"),
)


def pytest_addoption(parser):
    parser.addoption(
        "--services-only",
        action="store_true",
        help="Run only the tests that touch the database, the broker or Redis (not browser tests): "
        "the second pass on PostgreSQL and Redis, which has nothing to add to the others'.",
    )


# Fixtures through which a test reaches the database (every model fixture depends on one).
DATABASE_FIXTURES = {"db", "transactional_db", "django_db_setup", "live_server"}


def pytest_collection_modifyitems(config, items):
    """With ``--services-only``: keep the tests whose outcome can depend on PostgreSQL or Redis.

    Those use the database (a ``django_db`` mark or a fixture built on it) or are marked
    ``services``. Pure engine and parsing tests give the same answer on any backend, and
    browser tests check pages, whose queries the other tests already run on both.
    """
    if not config.getoption("--services-only"):
        _leave_fleet_tests_to_the_services_pass(config, items)
        return
    keep, drop = [], []
    for item in items:
        backed = item.get_closest_marker("django_db") is not None or item.get_closest_marker("services")
        backed = backed or bool(DATABASE_FIXTURES & set(getattr(item, "fixturenames", ())))
        (keep if backed and item.get_closest_marker("browser") is None else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _leave_fleet_tests_to_the_services_pass(config, items) -> None:
    """Deselect ``fleet`` tests here when the PostgreSQL + Redis pass runs them beside this one.

    Several hosts sharing one queue of runs is a deployment on a shared database and a
    network broker; the embedded default (SQLite, a filesystem broker) cannot span hosts.
    Those tests are the suite's slowest (real workers on several simulated hosts), so when
    ``scripts/test.sh`` runs the services pass too it says so, and they run there once.
    Without a services pass they run here, so a machine without PostgreSQL still tests them.
    """
    if os.environ.get("RUNWRIGHT_TEST_FLEET_IN_SERVICES_PASS") != "1":
        return
    drop = [item for item in items if item.get_closest_marker("fleet")]
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = [item for item in items if not item.get_closest_marker("fleet")]


@pytest.fixture(autouse=True)
def _fast_password_hashing(request, settings):
    """Creating Alice, Bob and Charlie in every test should not cost seconds of PBKDF2.

    Browser tests log in through a server in another process, which checks
    passwords with the real hashers, so they keep them.
    """
    if request.node.get_closest_marker("browser") is None:
        settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def team(db) -> Team:
    return Team.objects.create(name="ml")


@pytest.fixture
def other_team(db) -> Team:
    return Team.objects.create(name="rivals")


@pytest.fixture
def alice(team):
    return make_user("alice", team, Role.ADMIN)


@pytest.fixture
def bob(team):
    return make_user("bob", team, Role.VIEWER)


@pytest.fixture
def charlie(other_team):
    return make_user("charlie", other_team, Role.ADMIN)


@pytest.fixture
def project(team, alice) -> Project:
    return Project.objects.create(team=team, name="llm", created_by=alice)


@pytest.fixture
def api(client):
    """``api(user, method, path, body=None, raw=None)``: an API call with the user's bearer token."""

    def call(user, method: str, path: str, body=None, raw: bytes | None = None):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(user)}"} if user else {}
        send = getattr(client, method.lower())
        if raw is not None:
            return send(path, raw, content_type="application/json", **headers)
        if method == "GET":
            return send(path, body or {}, **headers)
        return send(path, body if body is not None else {}, content_type="application/json", **headers)

    return call


@pytest.fixture
def sent_tasks(monkeypatch) -> list[tuple[str, tuple, str | None]]:
    """(task name, args, queue) of each task the web sends; the broker is left out (not under test here)."""
    from webapp import enqueue

    sent: list[tuple[str, tuple, str | None]] = []
    monkeypatch.setattr(
        enqueue.app, "send_task", lambda name, args, queue=None: sent.append((name, tuple(args), queue))
    )
    return sent
