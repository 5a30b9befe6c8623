"""Generated bodies and query strings against every API route: a 4xx that names the field, never a 5xx.

Every route under ``/api/v1/`` is found by walking the URL resolver, and called with
every method its view accepts, as Alice (admin of the project's team, so the request
gets past the permission checks to the parsing and the services). Bodies are anything a
client could send: not UTF-8, not JSON, JSON that is not an object, objects nested past
any sane depth, the endpoints' own field names holding the wrong types, NUL characters,
lone surrogates, digits of other scripts, numbers that overflow a float or a BIGINT. A
4xx must leave the database as it was.
"""

from __future__ import annotations

import json
from urllib.parse import quote_from_bytes

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from modelcore.config import field_schema
from webapp.accounts.models import ApiToken, Invite, Membership, Team
from webapp.accounts.services import create_api_token, create_invite
from webapp.alerts.models import AlertRule
from webapp.evals.models import EvalJob, Report
from webapp.projects.models import Project
from webapp.runs.models import Checkpoint, Run
from webapp.sweeps.models import Sweep


def _api_routes() -> list[tuple[str, str, tuple[str, ...]]]:
    """(route, path template, methods) for every pattern under the API's namespace."""
    routes = []

    def walk(patterns, prefix: str, namespace: str) -> None:
        for p in patterns:
            if isinstance(p, URLResolver):
                walk(p.url_patterns, prefix + str(p.pattern), p.namespace or namespace)
            elif isinstance(p, URLPattern) and namespace == "api":
                methods = getattr(p.callback, "api_methods", None)
                assert methods, f"API route {p.name} is not an api_view: its methods are unknown"
                routes.append((p.name, "/" + prefix + str(p.pattern), methods))

    walk(get_resolver().url_patterns, "", "")
    return routes


API_ROUTES = _api_routes()
OBJECT_PARAMS = {"<int:project_id>": "project", "<int:run_id>": "run", "<int:job_id>": "job"}
OBJECT_PARAMS |= {
    "<int:team_id>": "team",
    "<int:invite_id>": "invite",
    "<int:user_id>": "member",
    "<int:token_id>": "api_token",
    "<str:token>": "invite_secret",
    "<int:rule_id>": "rule",
    "<int:sweep_id>": "sweep",
}

SECTIONS = {s["name"]: [f["name"] for f in s["fields"]] for s in field_schema()}
BODY_FIELDS = ["name", "team", "description", "preset", "config", "models", "tasks", "num_fewshot", "limit"]
BODY_FIELDS += ["report_name", "role", "expires_in_days", "read_only"]
BODY_FIELDS += ["kind", "key", "threshold", "after_step", "webhook_url"]
BODY_FIELDS += ["method", "parameters", "budget", "concurrency", "seed", "metric", "goal", "halving_step"]

odd_strings = st.one_of(
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "\x00",
            "a\x00b",
            "\ud800",
            "\udfff tail",
            "١٢",  # Arabic-Indic digits: int() and isdigit() take them
            "²",  # isdigit() says yes, int() raises
            "1_000",
            " 7 ",
            "99999999999999999999999",
            "-1",
            "1e999",
            "NaN",
            "ckpt:١٢:٣",
            "ckpt:²:3",
            "ckpt:99999999999999999999999:1",
            "ckpt:-1:-1",
            "ckpt:{run}:20",
            "hf:../../etc",
            "hf:/etc/passwd",
            "../../../etc/passwd",
            "tiny-cpu",
            "rw_arith",
            "x" * 5000,
        ]
    ),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**63) + 1),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, odd_strings)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(odd_strings, st.text(max_size=8)), children, max_size=4),
    ),
    max_leaves=12,
)
config_overrides = st.dictionaries(
    st.sampled_from([*SECTIONS, "bogus"]),
    st.one_of(
        st.dictionaries(
            st.sampled_from([f for fields in SECTIONS.values() for f in fields] + ["bogus"]), json_values
        ),
        json_values,
    ),
    max_size=3,
)
# The endpoints' own fields, so generated bodies get past "unknown field" into parsing and services.
known_field_objects = st.dictionaries(
    st.sampled_from(BODY_FIELDS),
    st.one_of(json_values, config_overrides, st.lists(odd_strings, max_size=3)),
    max_size=5,
)


def _encode(value) -> bytes:
    # allow_nan writes NaN/Infinity tokens; surrogates go out as \\ud800 escapes, as a client would send them.
    return json.dumps(value, allow_nan=True).encode()


def _nested(depth: int, opener: str) -> bytes:
    closer = {"[": "]", '{"a":': "}"}[opener]
    return (opener * depth + "1" + closer * depth).encode()


raw_bodies = st.one_of(
    known_field_objects.map(_encode),
    json_values.map(_encode),
    st.binary(max_size=64),
    st.builds(_nested, st.sampled_from([31, 33, 200, 5_000, 200_000]), st.sampled_from(["[", '{"a":'])),
    st.sampled_from(
        [
            b"",
            b"{",
            b"null",
            b"[]",
            b'"x"',
            b"\xff\xfe\x00",
            b'{"team": 1e999}',
            b'{"name": "\\ud800"}',
            b'{"name": "a\\u0000"}',
            b'{"limit": 1' + b"0" * 5000 + b"}",
            b'{"config": {"optim": {"lr": -Infinity}}}',
            b'{"models": ["ckpt:\xd9\xa1:\xd9\xa3"], "tasks": ["rw_arith"]}',
        ]
    ),
)
query_strings = st.dictionaries(
    st.sampled_from(
        [
            "key",
            "since_step",
            "max_points",
            "since",
            "until",
            "x",
            "person",
            "action",
            "from",
            "to",
            "limit",
            "before",
        ]
    ),
    st.one_of(odd_strings.map(lambda s: s.encode("utf-8", "surrogatepass")), st.binary(max_size=12)),
    max_size=4,
).map(lambda d: "&".join(f"{k}={quote_from_bytes(v)}" for k, v in d.items()))


def _snapshot() -> dict[str, list[dict]]:
    """Every row a write through the API could touch, to compare before and after a refused request."""
    models = (Team, Membership, Invite, Project, Run, Checkpoint, EvalJob, Report, AlertRule, Sweep)
    return {m.__name__: sorted(m.objects.values(), key=lambda row: row["id"]) for m in models}


@pytest.fixture
def world(alice, bob, charlie, project, run):
    """Alice's project with a run, a checkpoint and an eval job, and her token."""
    Checkpoint.objects.create(run=run, step=20, path="checkpoints/step_000020")
    job = EvalJob.objects.create(
        project=project, source="checkpoint", run=run, checkpoint_step=20, tasks=["rw_arith"]
    )
    invite, invite_secret = create_invite(actor=alice, team=project.team)
    create_api_token(alice, "spare")  # the one a DELETE may revoke; requests use the other
    spare = ApiToken.objects.get(user=alice, name="spare")
    return {
        "project": project,
        "run": run,
        "job": job,
        "token": create_api_token(alice),
        "team": project.team,
        "invite": invite,
        "invite_secret": invite_secret,
        "member": bob,
        "api_token": spare,
        "rule": AlertRule.objects.create(project=project, kind="failed"),
        "sweep": Sweep.objects.create(
            project=project,
            name="sweep",
            method="grid",
            parameters={"optim.lr": {"values": [0.001]}},
            trials=[{"optim.lr": 0.001}],
            concurrency=1,
            metric="val/loss",
            goal="min",
        ),
    }


def _path(template: str, world: dict) -> str:
    for param, name in OBJECT_PARAMS.items():
        value = world[name]
        template = template.replace(param, value if isinstance(value, str) else str(value.id))
    assert "<" not in template, f"no object known for {template}: add it to OBJECT_PARAMS"
    return template


def test_every_api_route_is_fuzzed():
    # A new API route is found by the resolver walk; this keeps the walk honest.
    names = {name for name, _, _ in API_ROUTES}
    assert {"projects", "project_runs", "run_cancel", "project_evals", "eval_job_cancel"} <= names
    assert {"project_sweeps", "sweep", "sweep_cancel"} <= names
    assert all(methods for _, _, methods in API_ROUTES)


@pytest.mark.parametrize(
    ("route", "template", "method"),
    [(name, template, method) for name, template, methods in API_ROUTES for method in methods],
    ids=[f"{name}-{method}" for name, _, methods in API_ROUTES for method in methods],
)
@settings(
    max_examples=30,
    deadline=None,
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(body=raw_bodies, query=query_strings, content_type=st.sampled_from(["application/json", "text/plain"]))
def test_generated_requests_never_get_a_5xx(
    client, world, route, template, method, body, query, content_type
):
    path = _path(template, world)
    body = body.replace(b"{run}", str(world["run"].id).encode())
    before = _snapshot()
    response = client.generic(
        method,
        f"{path}?{query}" if query else path,
        body,
        content_type=content_type,
        HTTP_AUTHORIZATION=f"Bearer {world['token']}",
    )
    assert response.status_code < 500, (route, method, body[:200], response.content[:300])
    if 400 <= response.status_code < 500:
        payload = response.json()  # always JSON, never a page
        assert payload.get("error") or payload.get("errors"), payload
        if response.status_code == 400:
            assert isinstance(payload.get("errors"), dict) and payload["errors"], payload
        assert _snapshot() == before, f"a refused {method} {route} changed the database"


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "body", "nested deeper"),
        (
            b'{"description": {"a": ' + b"[" * 40 + b"]" * 40 + b"}}",
            "description.a" + "[0]" * 30,
            "nested deeper",
        ),
        (b'{"name": "a\\u0000b"}', "name", "NUL"),
        (b'{"name": "\\ud800"}', "name", "lone surrogate"),
        (b'{"team": 1e999}', "team", "finite number"),
        (b'{"team": 99999999999999999999999}', "team", "between"),
        (b'{"team": "\xd9\xa1\xd9\xa2"}', "team", "digits 0-9"),
        (b'{"team": "\xc2\xb2"}', "team", "digits 0-9"),
        (b'{"team": 1.5}', "team", "whole number"),
        (b'{"name": "x", "owner": "alice"}', "owner", "unknown field; expected name, team, description"),
        (b"\xff\xfe\xfd", "body", "malformed JSON"),
        (b'"just a string"', "body", "must be a JSON object"),
    ],
)
def test_malformed_project_bodies_are_400_keyed_by_field(api, alice, team, body, field, message):
    response = api(alice, "POST", "/api/v1/projects", raw=body)
    assert response.status_code == 400
    errors = response.json()["errors"]
    assert message in errors[field], errors
    assert not Project.objects.exists()


@pytest.mark.parametrize(
    "ref", ["ckpt:١٢:٣", "ckpt:²:3", "ckpt:99999999999999999999999:1", "ckpt:1_0:2", "ckpt:-1:2"]
)
def test_model_reference_digits_must_be_ascii(api, alice, project, run, ref):
    response = api(
        alice, "POST", f"/api/v1/projects/{project.id}/evals", {"models": [ref], "tasks": ["rw_arith"]}
    )
    assert response.status_code == 400
    assert "is not a model choice" in response.json()["errors"]["models"]
    assert not EvalJob.objects.exists()


def test_cancel_takes_no_fields_and_another_teams_run_stays_404(api, alice, charlie, run):
    response = api(alice, "POST", f"/api/v1/runs/{run.id}/cancel", {"force": True})
    assert response.status_code == 400
    assert response.json()["errors"] == {"force": "unknown field; this endpoint takes no fields"}
    run.refresh_from_db()
    assert not run.cancel_requested
    # The team check comes before the body: Charlie learns nothing from a malformed body.
    assert api(charlie, "POST", f"/api/v1/runs/{run.id}/cancel", raw=b"{").status_code == 404


@pytest.mark.parametrize("value", ["١٢", "²", "99999999999999999999999", "1e3", " "])
def test_metrics_query_numbers_must_be_ascii_digits(api, alice, run, value):
    response = api(alice, "GET", f"/api/v1/runs/{run.id}/metrics", {"key": "train/loss", "since_step": value})
    assert response.status_code == 400
    assert "digits 0-9" in response.json()["errors"]["since_step"]


def test_nul_in_a_query_parameter_is_400_naming_it(api, alice, run):
    # PostgreSQL refuses NUL in a text filter (a 500 if it got that far); SQLite would find nothing.
    response = api(alice, "GET", f"/api/v1/runs/{run.id}/metrics?key=train%00loss&max_points=5")
    assert response.status_code == 400
    assert response.json()["errors"] == {"key": "must not contain NUL characters (%00)"}


config_paths = st.sampled_from(
    [f"{section}.{name}" for section, names in SECTIONS.items() for name in names] + ["optim.bogus", "x", ""]
)
parameter_specs = st.one_of(
    st.fixed_dictionaries({"values": st.one_of(st.lists(scalars, max_size=4), json_values)}),
    st.fixed_dictionaries(
        {"min": numbers, "max": numbers},
        optional={"scale": st.one_of(st.sampled_from(["log", "linear"]), odd_strings)},
    ),
    json_values,
)
sweep_specs = st.fixed_dictionaries(
    {
        "method": st.one_of(st.sampled_from(["grid", "random"]), odd_strings),
        "parameters": st.one_of(st.dictionaries(config_paths, parameter_specs, max_size=3), json_values),
    },
    optional={
        "preset": st.one_of(st.just("tiny-cpu"), odd_strings),
        "config": config_overrides,
        "budget": st.one_of(st.integers(min_value=-2, max_value=6), numbers, odd_strings),
        "concurrency": st.one_of(st.integers(min_value=0, max_value=3), numbers),
        "seed": numbers,
        "metric": odd_strings,
        "goal": st.one_of(st.sampled_from(["min", "max"]), odd_strings),
        "halving_step": st.one_of(st.integers(min_value=0, max_value=50), numbers),
        "halving_eta": st.one_of(st.integers(min_value=1, max_value=4), numbers),
    },
)


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(spec=sweep_specs)
@example(
    spec={
        "preset": "tiny-cpu",
        "method": "random",
        "parameters": {"optim.lr": {"min": 1e-4, "max": 1e-2, "scale": "log"}},
        "budget": 3,
        "concurrency": 2,
    }
)
def test_generated_sweep_specs_are_a_201_or_a_400_naming_a_field(client, world, spec):
    # Shaped like a sweep so the body gets past the field check into the search and the config schema.
    before = _snapshot()
    response = client.generic(
        "POST",
        f"/api/v1/projects/{world['project'].id}/sweeps",
        _encode(spec),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {world['token']}",
    )
    assert response.status_code in (201, 400), (spec, response.content[:300])
    if response.status_code == 400:
        assert response.json()["errors"], response.content
        assert _snapshot() == before
    else:
        sweep = Sweep.objects.get(pk=response.json()["id"])
        assert 1 <= len(sweep.trials) <= 500
        assert Run.objects.filter(sweep=sweep).count() == min(sweep.concurrency, len(sweep.trials))
