"""schemathesis against the API's own OpenAPI schema: every operation, generated requests.

Each operation of ``/api/v1/openapi.json`` gets requests generated from its schema (path,
query and body), sent to the Django WSGI app in-process with Alice's token (admin of the
fixture project's team). Path ids are either generated (mostly another team's or nobody's:
a 404) or pinned to the fixture's project, run, job, sweep, team, invite and rule, so the
request reaches the parsing and the services. Two checks, on every answer:

- ``not_a_server_error``: no 5xx, whatever the generated input;
- ``response_schema_conformance``: the status is one the operation documents, and the
  body matches that status's model.

(and, with them, ``status_code_conformance`` and ``content_type_conformance``: a status or
a media type the schema does not list is a failure, not a skipped check.)

Derandomized and bounded (``EXAMPLES`` per operation), so a run takes the same path every
time and the whole module stays well under a minute on two busy cores.
"""

from __future__ import annotations

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.core.wsgi import get_wsgi_application
from django.db import close_old_connections
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from modelcore.config import resolve
from webapp.accounts.services import create_api_token, create_invite
from webapp.alerts.models import AlertRule
from webapp.api.root import api
from webapp.evals.models import EvalJob
from webapp.runs.models import Checkpoint, Run, RunSource, RunStatus
from webapp.samples.models import SampleJob, SampleKind, SampleStatus
from webapp.sweeps.models import Sweep

EXAMPLES = 10
SCHEMA = schemathesis.openapi.from_dict(api.get_openapi_schema(path_prefix="/api/v1/"))
SCHEMA.app = get_wsgi_application()
OPERATIONS = [result.ok() for result in SCHEMA.get_all_operations()]


def test_every_operation_is_covered():
    # The schema is the API: every route of every router is in it, methods included.
    assert len(OPERATIONS) >= 60
    labels = {op.label for op in OPERATIONS}
    assert {
        "GET /api/v1/projects",
        "POST /api/v1/projects/{project_id}/runs",
        "GET /api/v1/fleet/hosts",
    } <= labels


@pytest.fixture
def keep_test_connection():
    """The WSGI handler closes the connection after each request; the test's transaction lives in it.

    Django's own test client disconnects the same handlers for the same reason.
    """
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def world(keep_test_connection, alice, bob, project, sent_tasks, settings, tmp_path):
    """Alice's project with a launched run, an external run, a checkpoint, an eval job, a sweep, ..."""
    settings.DATA_DIR = tmp_path / "data"
    settings.RUNS_DIR = settings.DATA_DIR / "runs"
    config = resolve("tiny-cpu").to_dict()
    run = Run.objects.create(
        project=project,
        name="r",
        preset="tiny-cpu",
        config=config,
        status=RunStatus.COMPLETED,
        created_by=alice,
    )
    external = Run.objects.create(
        project=project,
        name="ext",
        config={},
        source=RunSource.EXTERNAL,
        status=RunStatus.RUNNING,
        created_by=alice,
    )
    Checkpoint.objects.create(run=run, step=20, path="checkpoints/step_000020")
    job = EvalJob.objects.create(
        project=project, source="checkpoint", run=run, checkpoint_step=20, tasks=["rw_arith"]
    )
    sample = SampleJob.objects.create(
        run=run,
        checkpoint_step=20,
        kind=SampleKind.SAMPLE,
        status=SampleStatus.COMPLETED,
        prompt="Hi",
        text="there",
    )
    invite, secret = create_invite(actor=alice, team=project.team)
    sweep = Sweep.objects.create(
        project=project,
        name="sweep",
        method="grid",
        parameters={"optim.lr": {"values": [0.001]}},
        trials=[{"optim.lr": 0.001}],
        concurrency=1,
        metric="val/loss",
        goal="min",
    )
    rule = AlertRule.objects.create(project=project, kind="failed")
    return {
        "token": create_api_token(alice),
        "ids": {
            "project_id": [project.id],
            "run_id": [run.id, external.id],
            "job_id": [job.id, sample.id],
            "team_id": [project.team_id],
            "invite_id": [invite.id],
            "user_id": [bob.id, alice.id],
            "rule_id": [rule.id],
            "sweep_id": [sweep.id],
            "token_id": [],  # never Alice's own token: revoking it would make the rest a 401
            "token": [secret],
        },
    }


@pytest.mark.parametrize("operation", OPERATIONS, ids=lambda op: op.label)
def test_operation_conforms_to_its_schema(operation, world):
    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
    ]

    # Requests that fit the schema, and requests that break it (a wrong type, a missing field):
    # both must be answered with a status the operation documents, never a 5xx.
    cases = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

    @given(case=cases, pins=st.data())
    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def call(case, pins):
        for name in list(case.path_parameters or {}):
            known = world["ids"].get(name)
            if known and pins.draw(st.booleans(), label=f"pin {name}"):
                case.path_parameters[name] = pins.draw(st.sampled_from(known), label=name)
        response = case.call(headers={"Authorization": f"Bearer {world['token']}"})
        case.validate_response(response, checks=checks)

    call()
