"""MLflow's ``runs/search`` on Runwright: the filter and order_by grammar, its refusals, and the
search over REST (filters, orders, pages, deleted runs) on the database.

The real ``mlflow`` client's ``search_runs`` against a live server is in test_mlflow_api.py.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webapp.accounts.services import create_api_token
from webapp.mlflow_api import search
from webapp.mlflow_api.protocol import MlflowError
from webapp.mlflow_api.search import Clause, OrderKey, RunRow

BASE = "/api/2.0/mlflow"


# --- the grammar ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "clauses"),
    [
        ("", []),
        ("metrics.loss < 0.5", [Clause("metric", "loss", "<", 0.5)]),
        ("metric.`train/loss`>=1e-3", [Clause("metric", "train/loss", ">=", 0.001)]),
        ('metrics."val loss" != -2', [Clause("metric", "val loss", "!=", -2.0)]),
        (
            "params.lr = '0.1' and tags.team LIKE 'm%'",
            [Clause("param", "lr", "=", "0.1"), Clause("tag", "team", "LIKE", "m%")],
        ),
        ('parameters.opt ILIKE "ADAM%"', [Clause("param", "opt", "ILIKE", "ADAM%")]),
        ("tags.`mlflow.runName` = 'a b'", [Clause("tag", "mlflow.runName", "=", "a b")]),
        (
            "tags.note IS NULL AND params.x is not null",
            [Clause("tag", "note", "IS NULL"), Clause("param", "x", "IS NOT NULL")],
        ),
        (
            "attributes.status IN ('FAILED', \"KILLED\")",
            [Clause("attribute", "status", "IN", ("FAILED", "KILLED"))],
        ),
        ("run_id NOT IN ('1','2')", [Clause("attribute", "run_id", "NOT IN", ("1", "2"))]),
        ("attr.start_time > 1764000000000", [Clause("attribute", "start_time", ">", 1764000000000.0)]),
        (
            "created <= 5 AND run.end_time >= 1",
            [Clause("attribute", "start_time", "<=", 5.0), Clause("attribute", "end_time", ">=", 1.0)],
        ),
        ("`run name` = 'x'", [Clause("attribute", "run_name", "=", "x")]),
        ("metrics.a.b = 1", [Clause("metric", "a.b", "=", 1.0)]),
    ],
)
def test_filters_in_mlflows_grammar_are_read(text, clauses):
    assert search.parse_filter(text) == clauses


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("loss < 1", "unknown attribute 'loss'"),
        ("metrics.loss < 'low'", "metrics.loss is a number"),
        ("metrics.loss LIKE '1%'", "metrics.loss cannot be compared with LIKE"),
        ("params.lr = 0.1", "quote the value"),
        ("params.lr > '0.1'", "params.lr cannot be compared with >"),
        ("tags.t IN ('a')", "tags.t cannot be compared with IN"),
        ("attributes.status = ('A', 'B')", "only IN and NOT IN take a list"),
        ("attributes.run_id IN 'a'", "takes a list of quoted strings"),
        ("attributes.start_time = 'yesterday'", "milliseconds since 1970"),
        ("attributes.colour = 'red'", "unknown attribute 'colour'"),
        ("datasets.name = 'x'", "datasets are not recorded"),
        ("weights.x = 1", "unknown entity 'weights'"),
        ("metrics.loss < 1 OR metrics.loss > 2", "OR is not supported"),
        ("metrics.loss < 1 metrics.acc > 2", "expected AND or the end"),
        ("metrics.loss <> 1", "'<>' and '==' are not MLflow's"),
        ("params.x NOT LIKE 'a'", "NOT LIKE is not part"),
        ("metrics.loss <", "expected a value"),
        ("params.x = 'open", "expected a closing '"),
        ("metrics. < 1", "expected a name after metrics."),
        ("metrics.loss ~ 1", "expected a comparator"),
        ("status IN ('a', )", "a quoted string in the list"),
        ("x" * 3000, "longer than 2000"),
    ],
)
def test_what_is_not_in_the_grammar_is_invalid_parameter_value_saying_why(text, said):
    with pytest.raises(MlflowError) as caught:
        search.parse_filter(text)
    assert caught.value.code == "INVALID_PARAMETER_VALUE" and caught.value.status == 400
    assert said in str(caught.value)


@given(st.text(max_size=80))
@settings(max_examples=300, deadline=None)
def test_any_text_is_read_or_refused_in_mlflows_shape(text):
    for parse in (search.parse_filter, lambda t: search.parse_order_by([t])):
        try:
            parse(text)
        except MlflowError as exc:
            assert exc.code == "INVALID_PARAMETER_VALUE"


def test_order_by_items_are_read():
    assert search.parse_order_by(["metrics.loss", "params.lr DESC", "start_time asc", "tags.`a b` DESC"]) == [
        OrderKey("metric", "loss", True),
        OrderKey("param", "lr", False),
        OrderKey("attribute", "start_time", True),
        OrderKey("tag", "a b", False),
    ]
    for bad, said in [
        (["metrics.loss DOWN"], "expected ASC, DESC"),
        (["attributes.artifact_uri"], "not orderable"),
        ([1], "a list of strings"),
        (["metrics.x"] * 11, "at most 10"),
    ]:
        with pytest.raises(MlflowError, match=said):
            search.parse_order_by(bad)


def row(i: int, start: int, **fields) -> RunRow:
    return RunRow(
        id=i, run_name=f"r{i}", status="FINISHED", user_id="a", start_time=start, end_time=None, **fields
    )


def test_order_puts_nan_then_missing_last_either_way_and_ties_keep_newest_first():
    rows = [
        row(1, 10, metrics={"loss": 0.5}),
        row(2, 20, metrics={"loss": None}),  # logged, NaN
        row(3, 30),  # never logged
        row(4, 40, metrics={"loss": 0.1}),
        row(5, 50, metrics={"loss": 0.5}),
    ]
    up = search.ordered(rows, [OrderKey("metric", "loss", True)])
    assert [r.id for r in up] == [4, 5, 1, 2, 3]
    down = search.ordered(rows, [OrderKey("metric", "loss", False)])
    assert [r.id for r in down] == [5, 1, 4, 2, 3]
    assert [r.id for r in search.ordered(rows, [])] == [5, 4, 3, 2, 1]
    two = search.ordered(rows, [OrderKey("metric", "loss", False), OrderKey("attribute", "start_time", True)])
    assert [r.id for r in two] == [1, 5, 4, 2, 3]


def test_a_clause_on_a_missing_value_never_matches_except_is_null():
    bare = row(1, 10, params={"lr": "0.1"})
    assert not search.matches(bare, search.parse_filter("params.opt != 'adam'"))
    assert not search.matches(bare, search.parse_filter("attributes.end_time > 0"))
    assert search.matches(bare, search.parse_filter("params.opt IS NULL AND params.lr IS NOT NULL"))
    assert search.matches(bare, search.parse_filter("run_name LIKE 'R_' AND run_name ILIKE 'r%'")) is False
    assert search.matches(bare, search.parse_filter("run_name ILIKE 'R_'"))


# --- over REST, on the database -------------------------------------------------------------


@pytest.fixture
def mlflow(client, alice):
    secret = create_api_token(alice)

    def call(path: str, body: dict) -> dict:
        response = client.post(
            f"{BASE}/{path}",
            json.dumps(body),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        return {"status": response.status_code, **response.json()}

    return call


@pytest.fixture
def runs(mlflow) -> tuple[str, dict[str, str]]:
    """Five runs of one experiment, a..e, with losses, params, tags and statuses to search."""
    experiment = mlflow("experiments/create", {"name": "search"})["experiment_id"]
    table = {
        "a": ({"loss": 0.9}, {"lr": "0.1", "opt": "adam"}, {"team": "ml"}, "FINISHED"),
        "b": ({"loss": 0.2}, {"lr": "0.01", "opt": "sgd"}, {"team": "ml"}, "FAILED"),
        "c": ({"loss": 0.5, "acc": 0.7}, {"lr": "0.001", "opt": "Adam"}, {}, "RUNNING"),
        "d": ({"loss": "NaN"}, {"lr": "0.1"}, {"team": "nlp"}, "KILLED"),
        "e": ({}, {}, {}, "FINISHED"),
    }
    ids = {}
    for name, (metrics, params, tags, status) in table.items():
        run_id = mlflow("runs/create", {"experiment_id": experiment, "run_name": name})["run"]["info"][
            "run_id"
        ]
        ids[name] = run_id
        batch = {
            "run_id": run_id,
            "metrics": [{"key": k, "value": v, "step": 1, "timestamp": 0} for k, v in metrics.items()],
            "params": [{"key": k, "value": v} for k, v in params.items()],
            "tags": [{"key": k, "value": v} for k, v in tags.items()],
        }
        assert mlflow("runs/log-batch", batch)["status"] == 200
        if status != "RUNNING":
            assert mlflow("runs/update", {"run_id": run_id, "status": status})["status"] == 200
    return experiment, ids


def names(answer: dict, ids: dict[str, str]) -> list[str]:
    assert answer["status"] == 200, answer
    by_id = {v: k for k, v in ids.items()}
    return [by_id[r["info"]["run_id"]] for r in answer.get("runs", [])]


@pytest.mark.django_db
def test_search_filters_and_orders_over_rest(mlflow, runs):
    experiment, ids = runs

    def found(filter_text: str = "", order_by: list[str] | None = None) -> list[str]:
        body = {"experiment_ids": [experiment], "filter": filter_text, "order_by": order_by or []}
        return names(mlflow("runs/search", body), ids)

    assert found() == ["e", "d", "c", "b", "a"]  # newest first
    assert found("metrics.loss < 0.6", ["metrics.loss"]) == ["b", "c"]
    assert found("metrics.loss >= 0.2", ["metrics.loss DESC"]) == ["a", "c", "b"]
    assert found("", ["metrics.loss"]) == ["b", "c", "a", "d", "e"]  # NaN, then none
    assert found("", ["metrics.loss DESC"]) == ["a", "c", "b", "d", "e"]
    assert found("params.lr = '0.1'") == ["d", "a"]
    assert found("params.opt ILIKE 'adam'", ["params.lr ASC"]) == ["c", "a"]
    assert found("params.opt LIKE 'a%'") == ["a"]
    assert found("params.opt IS NULL") == ["e", "d"]
    assert found("tags.team != 'ml'") == ["d"]
    assert found("attributes.status IN ('FAILED', 'KILLED')", ["attributes.status"]) == ["b", "d"]
    assert found("status != 'RUNNING' AND tags.team = 'ml'", ["run_name DESC"]) == ["b", "a"]
    assert found("attributes.run_name LIKE '_'", ["params.opt DESC", "run_name"]) == ["b", "a", "c", "d", "e"]
    assert found(f"attributes.run_id IN ('{ids['a']}', '{ids['c']}')") == ["c", "a"]
    assert found("attributes.end_time > 0", ["attributes.end_time"]) == ["a", "b", "d", "e"]
    assert found("attributes.start_time > 0 AND metrics.acc = 0.7") == ["c"]
    assert found("tags.`mlflow.runName` = 'c'") == ["c"]


@pytest.mark.django_db
def test_pages_follow_the_token_to_the_end(mlflow, runs):
    experiment, ids = runs
    seen, token = [], None
    for _ in range(10):
        body = {"experiment_ids": [experiment], "max_results": 2, "order_by": ["run_name"]}
        answer = mlflow("runs/search", {**body, **({"page_token": token} if token else {})})
        seen.append(names(answer, ids))
        token = answer.get("next_page_token")
        if not token:
            break
    assert seen == [["a", "b"], ["c", "d"], ["e"]]


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"filter": "metrics.loss ~ 1"}, "expected a comparator"),
        ({"order_by": ["colour DESC"]}, "unknown attribute 'colour'"),
        ({"max_results": 50_001}, "at most 50000"),
        ({"max_results": 0}, "max_results"),
        ({"page_token": "not-a-token"}, "page_token"),
        ({"page_token": "eyJvZmZzZXQiOiAtMX0="}, "page_token"),  # {"offset": -1}
        ({"run_view_type": "SOME"}, "run_view_type"),
        ({"experiment_ids": []}, "experiment_ids"),
    ],
)
def test_bad_search_requests_are_400_in_mlflows_shape(mlflow, runs, body, said):
    experiment, _ = runs
    answer = mlflow("runs/search", {"experiment_ids": [experiment], **body})
    assert answer["status"] == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert said in answer["message"]


@pytest.mark.django_db
def test_deleted_runs_are_archived_hidden_from_active_searches_and_restored(mlflow, runs):
    from webapp.runs.models import Run

    experiment, ids = runs
    assert mlflow("runs/delete", {"run_id": ids["a"]})["status"] == 200
    assert Run.objects.get(pk=ids["a"]).archived
    got = mlflow("runs/search", {"experiment_ids": [experiment], "filter": "params.lr = '0.1'"})
    assert names(got, ids) == ["d"]
    deleted = mlflow("runs/search", {"experiment_ids": [experiment], "run_view_type": "DELETED_ONLY"})
    assert names(deleted, ids) == ["a"] and deleted["runs"][0]["info"]["lifecycle_stage"] == "deleted"
    every = mlflow("runs/search", {"experiment_ids": [experiment], "run_view_type": "ALL"})
    assert len(names(every, ids)) == 5
    refused = mlflow("runs/set-tag", {"run_id": ids["a"], "key": "k", "value": "v"})
    assert refused["status"] == 400 and "'active' lifecycle_stage" in refused["message"]
    assert mlflow("runs/restore", {"run_id": ids["a"]})["status"] == 200
    assert not Run.objects.get(pk=ids["a"]).archived
    assert mlflow("runs/set-tag", {"run_id": ids["a"], "key": "k", "value": "v"})["status"] == 200


@pytest.mark.django_db
def test_searching_the_default_experiment_before_any_run_creates_nothing(mlflow):
    from webapp.projects.models import Project

    answer = mlflow("runs/search", {"experiment_ids": ["0"]})
    assert answer == {"status": 200, "runs": []}
    assert not Project.objects.filter(name="Default").exists()


# --- experiments/search ----------------------------------------------------------------------


@pytest.fixture
def experiments(mlflow, charlie) -> dict[str, str]:
    """Four experiments of alice's team created a second apart (alpha oldest), and one she cannot see."""
    import datetime as dt

    from webapp.projects.models import Project

    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    ids = {}
    for i, name in enumerate(["alpha", "Alps", "beta", "gamma"]):
        ids[name] = mlflow("experiments/create", {"name": name})["experiment_id"]
        Project.objects.filter(pk=ids[name]).update(created_at=start + dt.timedelta(seconds=i))
    Project.objects.create(team=charlie.memberships.get().team, name="alpine", created_by=charlie)
    return ids


def _names(answer: dict) -> list[str]:
    assert answer["status"] == 200, answer
    return [e["name"] for e in answer.get("experiments", [])]


def test_experiments_are_filtered_and_ordered_over_rest(mlflow, experiments):
    second = 1767225601000  # 2026-01-01 00:00:01 UTC in milliseconds: Alps's creation
    for body, expected in [
        ({}, ["gamma", "beta", "Alps", "alpha"]),  # MLflow's default: last updated first
        ({"filter": "name = 'beta'"}, ["beta"]),
        ({"filter": "attributes.name != 'beta'", "order_by": ["name"]}, ["Alps", "alpha", "gamma"]),
        ({"filter": "name LIKE 'al%'"}, ["alpha"]),
        ({"filter": "name ILIKE 'al%'", "order_by": ["name DESC"]}, ["alpha", "Alps"]),
        ({"filter": f"creation_time > {second}", "order_by": ["creation_time"]}, ["beta", "gamma"]),
        ({"filter": f"last_update_time <= {second} AND name ILIKE 'AL%'"}, ["Alps", "alpha"]),
        ({"filter": "tags.`runwright.team` = 'ml'", "order_by": ["creation_time ASC"]}, [*experiments]),
        ({"filter": "tags.`runwright.team` = 'rivals'"}, []),
        ({"filter": "tags.missing IS NULL AND name = 'gamma'"}, ["gamma"]),
    ]:
        assert _names(mlflow("experiments/search", body)) == expected, body


def test_experiment_pages_follow_the_token_to_the_end(mlflow, experiments):
    pages, token = [], None
    for _ in range(5):
        body = {"max_results": 3, "order_by": ["name"], **({"page_token": token} if token else {})}
        answer = mlflow("experiments/search", body)
        pages.append(_names(answer))
        token = answer.get("next_page_token")
        if not token:
            break
    assert pages == [["Alps", "alpha", "beta"], ["gamma"]]


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ({"filter": "metrics.loss < 1"}, "experiments have no metrics"),
        ({"filter": "params.lr = '1'"}, "experiments have no params"),
        ({"filter": "run_name = 'a'"}, "unknown attribute 'run_name'; experiments have name"),
        ({"filter": "name IN ('a')"}, "attributes.name cannot be compared with IN"),
        ({"filter": "creation_time = 'x'"}, "is a number"),
        ({"filter": "name = 'a' OR name = 'b'"}, "OR is not supported"),
        ({"order_by": ["metrics.loss"]}, "experiments have no metrics"),
        ({"order_by": ["start_time"]}, "unknown attribute 'start_time'"),
        ({"page_token": "nonsense"}, "page_token"),
        ({"max_results": 0}, "max_results"),
    ],
)
def test_bad_experiment_searches_are_400_in_mlflows_shape(mlflow, experiments, body, said):
    answer = mlflow("experiments/search", body)
    assert answer["status"] == 400 and answer["error_code"] == "INVALID_PARAMETER_VALUE", answer
    assert said in answer["message"], answer
