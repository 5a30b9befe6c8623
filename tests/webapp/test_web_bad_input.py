"""Web pages and forms given bad input: a 400 (or the value ignored), never a 500.

The routes come from the permission matrix (one table of every route and how to build
its URL); the field names of each form are read from the page that shows it, so a new
form field is fuzzed without a change here.
"""

from __future__ import annotations

import re
from urllib.parse import quote_from_bytes

import pytest
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_route_permissions import MATRIX, team_a_state, world  # noqa: F401 - world is a fixture

from webapp.projects.models import Project

odd_values = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            "\x00",
            "١٢",
            "²",
            "1_000",
            "99999999999999999999999",
            "-99999999999999999999999",
            "1e999",
            "NaN",
            "-1",
            "ckpt:١٢:٣",
            "ckpt:²:3",
            "hf:../../etc",
            "../../etc/passwd",
            "x" * 3000,
            "tiny-cpu",
        ]
    ),
).map(lambda s: s.encode("utf-8", "surrogatepass"))
odd_bytes = st.one_of(odd_values, st.binary(max_size=12))

WEB_ROUTES = [
    (name, method)
    for name, route in MATRIX.items()
    if not route.public and not route.api and name != "runs:stream"
    for method, access in route.methods.items()
    if access.alice != 404
]
# Query parameters the views read, beside whatever a form names.
QUERY_KEYS = ["run", "key", "since", "until", "a", "b", "task", "preset", "model", "log_seq", "x"]
# The runs table's query (webapp/runs/filters.py).
QUERY_KEYS += ["where", "sort", "columns", "status", "tag", "cursor", "limit", "q"]
POST_ONLY_FIELDS = ["name", "jobs", "x"]


_FIELDS: dict[str, list[str]] = {}


def _field_names(client, name: str, url: str) -> list[str]:
    """The names of the inputs on the page at ``url`` (its GET), or the fields of the POST-only forms."""
    if name not in _FIELDS:
        _FIELDS[name] = _scrape_field_names(client, url)
    return _FIELDS[name]


def _scrape_field_names(client, url: str) -> list[str]:
    response = client.get(url)
    if response.status_code != 200:
        return POST_ONLY_FIELDS
    names = set(re.findall(r'name="([^"]+)"', response.content.decode()))
    names.discard("csrfmiddlewaretoken")
    return sorted(names) or POST_ONLY_FIELDS


def _encode(pairs: list[tuple[str, bytes]]) -> str:
    return "&".join(f"{quote_from_bytes(k.encode())}={quote_from_bytes(v)}" for k, v in pairs)


@pytest.mark.parametrize(("name", "method"), WEB_ROUTES)
@settings(
    max_examples=8,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_generated_form_and_query_input_never_gets_a_5xx(client, world, name, method, data):  # noqa: F811
    route = MATRIX[name]
    client.force_login(world["people"]["alice"])
    url = reverse(name.lstrip(":"), kwargs=route.kwargs(world))  # ":home" is in the root namespace
    keys = QUERY_KEYS if method == "GET" else _field_names(client, name, url) + ["x"]
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(keys), odd_bytes), max_size=6), label="pairs")
    before = team_a_state(world["team"])
    if method == "GET":
        response = client.get(f"{url}?{_encode(pairs)}")
    else:
        response = client.generic(
            "POST", url, _encode(pairs).encode(), content_type="application/x-www-form-urlencoded"
        )
    assert response.status_code < 500, (name, pairs, response.content[:300])
    if 400 <= response.status_code < 500:
        assert team_a_state(world["team"]) == before, f"a refused {method} {name} changed team A's data"


@pytest.mark.parametrize(
    "runs",
    [
        ["abc", "{run2}"],
        ["١٢", "{run2}"],
        ["²", "{run2}"],
        ["99999999999999999999999", "{run2}"],
        ["{run}", "1_0"],
    ],
)
def test_compare_with_run_ids_that_are_not_ascii_numbers_is_400(client_for, world, runs):  # noqa: F811
    client = client_for(world["people"]["alice"])
    query = "&".join(f"run={r.format(run=world['run'].id, run2=world['run2'].id)}" for r in runs)
    page = client.get(f"/projects/{world['project'].id}/compare?{query}")
    assert page.status_code == 400 and b"is not a run id" in page.content
    series = client.get(f"/projects/{world['project'].id}/compare/series?{query}&key=train/loss")
    assert series.status_code == 400 and "is not a run id" in series.json()["errors"]["run"]


@pytest.mark.parametrize(
    "window", ["since=١٢&until=²", "since=99999999999999999999999", "since=1e999&until=-1_0"]
)
def test_run_series_ignores_a_step_window_it_cannot_read(client_for, world, window):  # noqa: F811
    response = client_for(world["people"]["alice"]).get(f"/runs/{world['run'].id}/series?{window}")
    assert response.status_code == 200 and "series" in response.json()


def test_report_pair_ids_that_are_not_numbers_fall_back_to_the_first_two(client_for, world):  # noqa: F811
    url = f"/reports/{world['report'].id}/?a=99999999999999999999999&b=١"
    assert client_for(world["people"]["alice"]).get(url).status_code == 200


def test_project_name_with_nul_is_a_form_error(client_for, world):  # noqa: F811
    response = client_for(world["people"]["alice"]).post("/projects/", {"name": "a\x00b"})
    assert response.status_code == 400 and b"Null characters are not allowed" in response.content
    assert not Project.objects.filter(name__startswith="a").exists()


@pytest.mark.parametrize(
    "path", ["/runs/{run}/series?key=a%00b", "/projects/{project}/compare/series?key=%00"]
)
def test_nul_in_a_query_parameter_is_a_400_page(client_for, world, path):  # noqa: F811
    url = path.format(run=world["run"].id, project=world["project"].id)
    response = client_for(world["people"]["alice"]).get(url)
    assert response.status_code == 400 and b"NUL" in response.content
