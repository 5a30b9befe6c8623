"""The runs table's query (webapp.runs.filters): the project page, its JSON and the API list agree.

Runs differ in config (layers), metrics (val/loss) and tags, so each filter, column and sort
can be told apart from its neighbours; a bad query names its parameter and is never a 500.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlparse

import pytest
from django.http import QueryDict
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelcore.config import resolve
from webapp.annotations.models import RunTag
from webapp.input_errors import InputError
from webapp.metrics.services import Point, upsert_points
from webapp.runs.filters import decode_cursor, encode_cursor, parse_runs_query
from webapp.runs.models import Run, RunStatus


@pytest.fixture
def runs(project, alice) -> dict[str, Run]:
    """Four runs: n_layers 2/4/8/12; val/loss falling to a different floor; tags; statuses."""
    made = {}
    specs = [
        ("small", 2, RunStatus.COMPLETED, [3.0, 2.5, 2.4], ["baseline"]),
        ("medium", 4, RunStatus.FAILED, [2.9, 2.2, 2.3], ["baseline", "lr-sweep"]),
        ("large", 8, RunStatus.RUNNING, [2.8, 1.9, 2.0], ["lr-sweep"]),
        ("huge", 12, RunStatus.COMPLETED, [2.7, 2.05, 1.8], []),
    ]
    for name, layers, status, losses, tags in specs:
        config = resolve("tiny-cpu", {"model": {"n_layers": layers}}).to_dict()
        run = Run.objects.create(
            project=project, name=name, preset="tiny-cpu", config=config, status=status, created_by=alice
        )
        upsert_points(run.id, [Point("val/loss", 10 * (i + 1), v, time.time()) for i, v in enumerate(losses)])
        RunTag.objects.bulk_create([RunTag(run=run, name=t) for t in tags])
        made[name] = run
    other = Run.objects.create(
        project=project,
        name="other-preset",
        preset="",
        config=resolve("tiny-cpu").to_dict(),
        created_by=alice,
    )
    made["other"] = other
    return made


def names(client, project, query: str) -> list[str]:
    response = client.get(f"/projects/{project.id}/runs.json?{query}")
    assert response.status_code == 200, response.content
    return [r["name"] for r in response.json()["runs"]]


def test_status_tag_and_preset_filters(client_for, bob, project, runs):
    client = client_for(bob)
    assert names(client, project, "status=completed&sort=name") == ["huge", "small"]
    assert names(client, project, "status=failed,running&sort=name") == ["large", "medium"]
    assert names(client, project, "tag=baseline&sort=name") == ["medium", "small"]
    assert names(client, project, "tag=baseline&tag=lr-sweep&sort=name") == ["large", "medium", "small"]
    assert names(client, project, "preset=tiny-cpu&sort=name") == ["huge", "large", "medium", "small"]
    assert names(client, project, "q=ARG") == ["large"]
    assert names(client, project, "q=completed+huge") == ["huge"]  # every word, in name, preset or status


def test_config_and_metric_conditions(client_for, bob, project, runs):
    client = client_for(bob)
    assert names(client, project, "where=model.n_layers>=8&sort=name") == ["huge", "large"]
    assert names(client, project, "where=model.n_layers!=8&where=model.n_layers>2&sort=name") == [
        "huge",
        "medium",
    ]
    # last (the default), min and max are different questions
    assert names(client, project, "where=val/loss<2.1&sort=name") == ["huge", "large"]
    assert names(client, project, "where=val/loss:min<2.1&sort=name") == ["huge", "large"]
    assert names(client, project, "where=val/loss:min<2.3&sort=name") == ["huge", "large", "medium"]
    assert names(client, project, "where=val/loss:max>=2.9&sort=name") == ["medium", "small"]
    # several in one box, as the page's form sends them
    assert names(client, project, "where=model.n_layers>2;val/loss:last<2.2&sort=name") == ["huge", "large"]
    assert names(client, project, "where=optim.schedule=nothing") == []
    assert (
        len(names(client, project, "where=model.tie_embeddings=true"))
        + len(names(client, project, "where=model.tie_embeddings=false"))
        == 5
    )


def test_sort_by_any_column_with_missing_values_last(client_for, bob, project, runs):
    client = client_for(bob)
    by_layers = names(client, project, "sort=-model.n_layers&status=completed,failed,running")
    assert by_layers == ["huge", "large", "medium", "small"]
    assert names(client, project, "sort=val/loss:min") == ["huge", "large", "medium", "small", "other-preset"]
    assert names(client, project, "sort=-val/loss:min") == [
        "small",
        "medium",
        "large",
        "huge",
        "other-preset",
    ]
    assert names(client, project, "sort=val/loss") == ["huge", "large", "medium", "small", "other-preset"]
    assert names(client, project, "sort=name") == ["huge", "large", "medium", "other-preset", "small"]
    assert names(client, project, "sort=-name")[0] == "small"


def test_chosen_columns_carry_each_runs_values(client_for, bob, project, runs):
    body = (
        client_for(bob)
        .get(f"/projects/{project.id}/runs.json?columns=model.n_layers,val/loss:min,val/loss:max&sort=name")
        .json()
    )
    huge = body["runs"][0]
    assert huge["name"] == "huge"
    assert huge["columns"] == {"model.n_layers": 12, "val/loss:min": 1.8, "val/loss:max": 2.7}
    assert huge["tags"] == [] and body["runs"][1]["tags"] == ["lr-sweep"]
    other = next(r for r in body["runs"] if r["name"] == "other-preset")
    assert other["columns"]["val/loss:min"] is None
    assert '<td class="num">12</td>' in body["rows"], body["rows"]
    assert '<td class="num">1.8</td>' in body["rows"], body["rows"]


def test_pages_follow_the_cursor_to_the_end(api, alice, project, runs):
    seen, cursor, pages = [], "", 0
    while True:
        response = api(alice, "GET", f"/api/v1/projects/{project.id}/runs?limit=2&sort=name&cursor={cursor}")
        assert response.status_code == 200, response.content
        body = response.json()
        assert body["total"] == 5
        seen += [r["name"] for r in body["runs"]]
        pages += 1
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == 3 and seen == ["huge", "large", "medium", "other-preset", "small"]


def test_api_list_keeps_its_fields_and_takes_the_same_filters(api, bob, project, runs):
    response = api(bob, "GET", f"/api/v1/projects/{project.id}/runs?where=model.n_layers>=8&tag=lr-sweep")
    body = response.json()
    assert [r["name"] for r in body["runs"]] == ["large"]
    run = body["runs"][0]
    for field in ("id", "name", "preset", "status", "step", "last_loss", "duration_s", "created_at", "url"):
        assert field in run
    assert run["tags"] == ["lr-sweep"]


def test_the_form_suggests_config_fields_and_the_projects_metric_keys(client_for, bob, project, runs):
    html = client_for(bob).get(f"/projects/{project.id}/").content.decode()
    suggestions = html.split('<datalist id="run-fields">')[1].split("</datalist>")[0]
    assert '<option value="model.n_layers">' in suggestions and '<option value="val/loss">' in suggestions


def test_the_form_shows_several_statuses_as_one_choice(client_for, bob, project, runs):
    html = client_for(bob).get(f"/projects/{project.id}/?status=failed,running&tag=gone").content.decode()
    assert '<option value="failed,running" selected>' in html
    assert '<option value="gone" selected>' in html


def test_the_page_keeps_the_filter_in_its_links(client_for, bob, project, runs):
    response = client_for(bob).get(f"/projects/{project.id}/?where=model.n_layers>=4&columns=val/loss:min")
    assert response.status_code == 200
    html = response.content.decode()
    assert "large" in html and "small</a>" not in html
    # The header sorts keep the filter (the shareable URL is the whole state).
    link = next(part for part in html.split('href="?')[1:] if "sort=val" in part).split('"')[0]
    query = parse_qs(urlparse("?" + link.replace("&amp;", "&")).query)
    assert query["where"] == ["model.n_layers>=4"] and query["sort"] == ["val/loss:min"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("where=model.n_layers>>8", "where"),
        ("where=model.n_layerz>=8", "where"),
        ("where=model.n_layers>=eight", "where"),
        ("where=model.n_layers>=99999999999999999999999", "where"),
        ("where=model.n_layers>=٨", "where"),
        ("where=val/loss<1e999", "where"),
        ("where=val/loss<nan", "where"),
        ("where=val/loss<", "where"),
        ("where=optim.schedule<cosine", "where"),
        ("where=__import__('os')", "where"),
        ("where=val/loss' OR 1=1 --<2", "where"),
        ("status=exploded", "status"),
        ("sort=model.nope", "sort"),
        ("columns=a b", "columns"),
        ("limit=0", "limit"),
        ("limit=１０", "limit"),
        ("cursor=garbage!!", "cursor"),
        ("cursor=" + encode_cursor(-5), "cursor"),
    ],
)
def test_a_bad_query_is_a_400_naming_the_parameter(client_for, api, bob, project, runs, query, field):
    response = client_for(bob).get(f"/projects/{project.id}/runs.json?{query}")
    assert response.status_code == 400 and field in response.json()["errors"], response.content
    api_response = api(bob, "GET", f"/api/v1/projects/{project.id}/runs?{query}")
    assert api_response.status_code == 400 and field in api_response.json()["errors"]
    page = client_for(bob).get(f"/projects/{project.id}/?{query}")
    assert page.status_code == 400 and b"runs-query-errors" in page.content


def test_another_teams_project_is_a_404_whatever_the_filter(client_for, api, charlie, project, runs):
    assert client_for(charlie).get(f"/projects/{project.id}/runs.json?tag=baseline").status_code == 404
    assert api(charlie, "GET", f"/api/v1/projects/{project.id}/runs?tag=baseline").status_code == 404


def test_tags_of_another_project_do_not_leak_into_the_filter(
    client_for, alice, charlie, project, runs, other_team
):
    from webapp.projects.models import Project

    theirs = Project.objects.create(team=other_team, name="theirs", created_by=charlie)
    run = Run.objects.create(project=theirs, name="secret", config=resolve("tiny-cpu").to_dict())
    RunTag.objects.create(run=run, name="baseline")
    assert "secret" not in names(client_for(alice), project, "tag=baseline")


def test_cursor_round_trip_and_query_parsing():
    assert decode_cursor(encode_cursor(150)) == 150
    query = parse_runs_query(QueryDict("where=val/loss:min<2&columns=model.n_layers&sort=-val/loss"))
    assert query.conditions[0].column.id == "val/loss:min" and query.sort == "-val/loss:last"
    assert "where=val%2Floss%3Amin%3C2.0" in query.query_string()
    with pytest.raises(InputError):
        parse_runs_query(QueryDict("where=" + "&where=".join(["val/loss<1"] * 11)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.sampled_from(["where", "sort", "columns", "status", "tag", "preset", "q", "limit", "cursor"]),
        min_size=1,
        max_size=4,
    ),
    st.lists(st.text(min_size=0, max_size=40).filter(lambda t: "\x00" not in t), min_size=4, max_size=4),
)
def test_any_query_is_answered_never_a_500(client_for, bob, project, names_, values):
    client = client_for(bob)
    query = urlencode(list(zip(names_, values, strict=False)))
    response = client.get(f"/projects/{project.id}/runs.json?{query}")
    assert response.status_code in (200, 400), (query, response.content[:300])


# --- keyset pages ----------------------------------------------------------------------------


def all_pages(api, user, project, query: str, limit: int) -> tuple[list[str], list[dict]]:
    """The names over every page of ``query`` followed by its cursors, and the cursors' contents."""
    import base64
    import json

    seen, cursors, cursor = [], [], ""
    while True:
        response = api(
            user, "GET", f"/api/v1/projects/{project.id}/runs?{query}&limit={limit}&cursor={cursor}"
        )
        assert response.status_code == 200, response.content
        body = response.json()
        seen += [r["name"] for r in body["runs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen, cursors
        cursors.append(json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))))


@pytest.mark.parametrize(
    "sort",
    ["name", "-name", "status", "-created", "created", "step", "-last_loss", "val/loss:min", "-val/loss:min"],
)
def test_keyset_pages_list_every_run_once_in_the_sorts_order(api, alice, project, runs, sort):
    Run.objects.filter(pk=runs["large"].pk).update(step=30, last_loss=2.0)
    Run.objects.filter(pk=runs["small"].pk).update(step=30, last_loss=2.4)  # ties: id decides
    everything, _ = all_pages(api, alice, project, f"sort={sort}", 200)
    for limit in (1, 2, 3):
        paged, cursors = all_pages(api, alice, project, f"sort={sort}", limit)
        assert paged == everything, (limit, paged)
        assert all("k" in c and c["s"] == parse_runs_query(QueryDict(f"sort={sort}")).sort for c in cursors)
        assert [c["o"] for c in cursors] == list(range(limit, 5, limit))


def test_a_keyset_page_goes_on_after_its_last_run_when_earlier_pages_change(api, alice, project, runs):
    first = api(alice, "GET", f"/api/v1/projects/{project.id}/runs?sort=name&limit=2").json()
    assert [r["name"] for r in first["runs"]] == ["huge", "large"]
    Run.objects.create(
        project=project, name="aaa-new", config=resolve("tiny-cpu").to_dict()
    )  # before page 1's end
    second = api(
        alice, "GET", f"/api/v1/projects/{project.id}/runs?sort=name&limit=2&cursor={first['next_cursor']}"
    )
    assert [r["name"] for r in second.json()["runs"]] == [
        "medium",
        "other-preset",
    ]  # neither repeated nor skipped


def test_duration_and_config_sorts_keep_the_offset(api, alice, project, runs):
    for sort in ("duration", "-model.n_layers"):
        everything, _ = all_pages(api, alice, project, f"sort={sort}", 200)
        paged, cursors = all_pages(api, alice, project, f"sort={sort}", 2)
        assert sorted(paged) == sorted(everything) and len(paged) == 5
        assert all("k" not in c for c in cursors)


@pytest.mark.parametrize(
    "cursor",
    [
        encode_cursor(2, sort="-created", after=("2026-01-01T00:00:00+00:00", 3)),  # made for another sort
        encode_cursor(2, sort="name", after=(7, 3)),  # a number where a name goes
        encode_cursor(2, sort="name", after=("huge", "3")),
        encode_cursor(2, sort="name", after=("huge", 0)),
        encode_cursor(2, sort="name", after=("huge", 2**70)),
        encode_cursor(2, sort="name", after=("a\x00b", 3)),
    ],
)
def test_a_tampered_keyset_cursor_is_a_400_naming_the_cursor(api, bob, project, runs, cursor):
    response = api(bob, "GET", f"/api/v1/projects/{project.id}/runs?sort=name&cursor={cursor}")
    assert response.status_code == 400 and "cursor" in response.json()["errors"], response.content


@pytest.mark.parametrize(
    ("sort", "value"),
    [
        ("-created", "yesterday"),
        ("-created", "2026-01-01T00:00:00"),
        ("step", 1.5),
        ("step", True),
        ("val/loss:min", "low"),
    ],
)
def test_a_keyset_value_of_the_wrong_type_is_a_400(api, bob, project, runs, sort, value):
    cursor = encode_cursor(2, sort=parse_runs_query(QueryDict(f"sort={sort}")).sort, after=(value, 3))
    response = api(bob, "GET", f"/api/v1/projects/{project.id}/runs?sort={sort}&cursor={cursor}")
    assert response.status_code == 400 and "cursor" in response.json()["errors"], response.content
