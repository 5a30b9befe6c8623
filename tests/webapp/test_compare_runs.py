"""Comparing runs: the page, its series endpoint, and the errors a bad selection gets."""

from __future__ import annotations

import pytest

from webapp.metrics.services import Point, upsert_points
from webapp.projects.models import Project
from webapp.runs.models import Run


@pytest.fixture
def two_runs(make_run) -> list[Run]:
    first, second = make_run(name="baseline"), make_run(name="bigger lr")
    upsert_points(first.id, [Point("train/loss", s, 5.0 - s / 10, 0.0) for s in range(1, 11)])
    upsert_points(second.id, [Point("train/loss", s, 4.0 - s / 10, 0.0) for s in range(1, 6)])
    upsert_points(second.id, [Point("val/loss", 5, 3.3, 0.0)])
    return [first, second]


def _compare_url(project, *run_ids, series: bool = False) -> str:
    query = "&".join(f"run={i}" for i in run_ids)
    return f"/projects/{project.id}/compare{'/series' if series else ''}?{query}"


def test_compare_page_lists_the_runs_and_every_key(client_for, bob, project, two_runs):
    response = client_for(bob).get(_compare_url(project, *(r.id for r in two_runs)))  # viewers may compare
    html = response.content.decode()
    assert response.status_code == 200
    assert "baseline" in html and "bigger lr" in html
    assert '<option value="train/loss">' in html and '<option value="val/loss">' in html


def test_series_endpoint_gives_one_series_per_run_in_the_order_picked(client_for, alice, project, two_runs):
    first, second = two_runs
    body = (
        client_for(alice)
        .get(_compare_url(project, second.id, first.id, series=True) + "&key=train/loss")
        .json()
    )
    assert [(s["run"], s["name"]) for s in body["series"]] == [
        (second.id, "bigger lr"),
        (first.id, "baseline"),
    ]
    assert body["series"][0]["steps"] == [1, 2, 3, 4, 5]
    assert body["series"][1]["values"][-1] == pytest.approx(4.0)
    zoom = client_for(alice).get(
        _compare_url(project, first.id, second.id, series=True) + "&key=train/loss&since=7"
    )
    assert zoom.json()["series"][0]["steps"] == [8, 9, 10] and zoom.json()["series"][1]["steps"] == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("run={a}", "pick at least two runs"),
        ("run={a}&run={a}", "pick at least two runs"),  # duplicates count once
        ("run={a}&run=abc", "is not a run id"),
        ("run={a}&run=999999", "no run 999999 in this project"),
        ("", "pick at least two runs"),
    ],
)
def test_a_bad_selection_names_the_field_and_the_fix(client_for, alice, project, two_runs, query, message):
    url = f"/projects/{project.id}/compare?" + query.format(a=two_runs[0].id)
    page = client_for(alice).get(url)
    assert page.status_code == 400 and message in page.content.decode()
    data = client_for(alice).get(url.replace("/compare?", "/compare/series?") + "&key=train/loss")
    assert data.status_code == 400 and message in data.json()["errors"]["run"]


def test_too_many_runs_are_refused(client_for, alice, project, make_run):
    ids = [make_run(name=f"r{i}").id for i in range(9)]
    page = client_for(alice).get(_compare_url(project, *ids))
    assert page.status_code == 400 and "at most 8 runs" in page.content.decode()


def test_series_endpoint_needs_a_key(client_for, alice, project, two_runs):
    response = client_for(alice).get(_compare_url(project, *(r.id for r in two_runs), series=True))
    assert response.status_code == 400 and "key" in response.json()["errors"]


def test_other_teams_cannot_compare_or_smuggle_in_runs(
    client_for, alice, charlie, project, two_runs, other_team
):
    assert client_for(charlie).get(_compare_url(project, *(r.id for r in two_runs))).status_code == 404
    # A run of another team's project cannot be pulled into a comparison of this one.
    secret = Run.objects.create(
        project=Project.objects.create(team=other_team, name="secret"),
        name="their-run",
        config=two_runs[0].config,
    )
    page = client_for(alice).get(_compare_url(project, two_runs[0].id, secret.id))
    assert page.status_code == 400 and "their-run" not in page.content.decode()


def test_project_page_offers_the_comparison(client_for, alice, project, two_runs):
    html = client_for(alice).get(f"/projects/{project.id}/").content.decode()
    assert f'action="/projects/{project.id}/compare"' in html
    assert html.count('name="run"') == 2


def test_the_page_lists_only_the_config_fields_that_differ(client_for, alice, project, make_run):
    base = make_run(name="base")
    config = {section: dict(fields) for section, fields in base.config.items()}
    config["optim"]["lr"] = 0.01
    config["train"]["seed"] = 7
    other = make_run(name="other", config=config)
    html = client_for(alice).get(_compare_url(project, base.id, other.id)).content.decode()
    assert 'id="config-differences"' in html
    assert "<code>optim.lr</code>" in html and "<code>train.seed</code>" in html
    assert "<code>model.d_model</code>" not in html
    same = client_for(alice).get(_compare_url(project, base.id, make_run(name="twin").id)).content.decode()
    assert "These runs have the same config." in same


def test_config_differences_show_a_field_one_run_lacks():
    from webapp.runs.compare import config_differences

    older = Run(config={"optim": {"lr": 0.001}})
    newer = Run(config={"optim": {"lr": 0.001, "schedule": "wsd"}})
    assert config_differences([older, newer]) == [{"field": "optim.schedule", "values": [None, "wsd"]}]
