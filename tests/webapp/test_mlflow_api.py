"""MLflow's tracking API on Runwright: its error shapes, and the real ``mlflow`` client against a live server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from people import make_user
from service_processes import web_server

from webapp.accounts.models import ApiToken, Role
from webapp.accounts.services import create_api_token
from webapp.metrics.models import MetricPoint
from webapp.projects.models import Project
from webapp.runs.models import Run, RunSource, RunStatus

BASE = "/api/2.0/mlflow"


@pytest.fixture
def mlflow(client):
    """``mlflow(user, method, path, body)``: one MLflow REST call with the user's token."""

    def call(user, method: str, path: str, body=None, raw: bytes | None = None, prefix: str = BASE):
        headers = {"HTTP_AUTHORIZATION": f"Bearer {create_api_token(user)}"} if user else {}
        url = f"{prefix}/{path}"
        if method == "GET":
            return client.get(url, body or {}, **headers)
        payload = raw if raw is not None else json.dumps(body or {})
        return client.post(url, payload, content_type="application/json", **headers)

    return call


def started(mlflow, user, experiment: str = "llm") -> str:
    created = mlflow(user, "POST", "experiments/create", {"name": experiment})
    experiment_id = created.json()["experiment_id"]
    run = mlflow(user, "POST", "runs/create", {"experiment_id": experiment_id, "run_name": "r1"})
    assert run.status_code == 200, run.json()
    return run.json()["run"]["info"]["run_id"]


@pytest.mark.django_db
def test_an_unsupported_call_is_endpoint_not_found_in_mlflows_shape(mlflow, alice):
    for prefix in (BASE, "/ajax-api/2.0/mlflow"):
        response = mlflow(alice, "POST", "model-versions/create", {}, prefix=prefix)
        assert response.status_code == 404
        body = response.json()
        assert body["error_code"] == "ENDPOINT_NOT_FOUND" and "runs/log-batch" in body["message"]


@pytest.mark.django_db
def test_no_token_is_unauthenticated_and_a_read_only_token_cannot_write(mlflow, client, alice):
    response = client.get(f"{BASE}/experiments/get-by-name", {"experiment_name": "x"})
    assert response.status_code == 401 and response.json()["error_code"] == "UNAUTHENTICATED"
    secret = create_api_token(alice)
    ApiToken.objects.update(read_only=True)
    refused = client.post(
        f"{BASE}/experiments/create",
        {"name": "x"},
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"


@pytest.mark.django_db
def test_an_experiment_is_a_project_of_the_same_name_created_on_first_use(mlflow, alice, project):
    found = mlflow(alice, "GET", "experiments/get-by-name", {"experiment_name": project.name})
    assert found.json()["experiment"]["experiment_id"] == str(project.id)
    missing = mlflow(alice, "GET", "experiments/get-by-name", {"experiment_name": "new"})
    assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
    created = mlflow(alice, "POST", "experiments/create", {"name": "new"})
    assert Project.objects.get(pk=created.json()["experiment_id"]).name == "new"
    again = mlflow(alice, "POST", "experiments/create", {"name": "new"})
    assert again.json()["error_code"] == "RESOURCE_ALREADY_EXISTS"


@pytest.mark.django_db
def test_a_person_in_several_teams_gets_the_first_team_they_may_launch_in(mlflow, alice, other_team):
    from webapp.accounts.models import Membership

    Membership.objects.create(team=other_team, user=alice, role=Role.MEMBER)  # "rivals" after "ml"
    created = mlflow(alice, "POST", "experiments/create", {"name": "shared"})
    assert Project.objects.get(pk=created.json()["experiment_id"]).team.name == "ml"


@pytest.mark.django_db
def test_runs_are_external_and_metrics_are_idempotent_per_key_and_step(mlflow, alice):
    run_id = started(mlflow, alice)
    run = Run.objects.get(pk=run_id)
    assert run.source == RunSource.EXTERNAL and run.status == RunStatus.RUNNING and run.name == "r1"
    batch = {
        "run_id": run_id,
        "metrics": [
            {"key": "loss", "value": 2.0, "timestamp": "1764000000000", "step": "1"},
            {"key": "loss", "value": "NaN", "timestamp": 1764000000001, "step": 2},
        ],
        "params": [{"key": "lr", "value": "0.1"}],
        "tags": [{"key": "team", "value": "x"}],
    }
    for _ in range(2):
        assert mlflow(alice, "POST", "runs/log-batch", batch).status_code == 200
    assert list(MetricPoint.objects.filter(run=run).order_by("step").values_list("step", "value")) == [
        (1, 2.0),
        (2, None),
    ]
    got = mlflow(alice, "GET", "runs/get", {"run_id": run_id}).json()["run"]
    assert {"key": "lr", "value": "0.1"} in got["data"]["params"]
    assert {"key": "team", "value": "x"} in got["data"]["tags"]
    assert got["data"]["metrics"] == [{"key": "loss", "value": "NaN", "timestamp": 1764000000001, "step": 2}]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "metric, field",
    [
        ({"key": "loss", "value": "abc", "step": 1}, "value"),
        ({"key": "loss", "value": 1, "step": -1}, "step"),
        ({"key": "loss", "value": 1, "step": "1e3"}, "step"),
        ({"key": "lo\u0000ss", "value": 1, "step": 1}, "key"),
        ({"key": "", "value": 1}, "key"),
        ({"key": "loss", "value": 1, "step": 2**64}, "step"),
    ],
)
def test_hostile_metrics_are_invalid_parameter_value_naming_the_field(mlflow, alice, metric, field):
    run_id = started(mlflow, alice)
    response = mlflow(alice, "POST", "runs/log-batch", {"run_id": run_id, "metrics": [metric]})
    assert response.status_code == 400, response.json()
    assert response.json()["error_code"] == "INVALID_PARAMETER_VALUE" and field in response.json()["message"]
    assert not MetricPoint.objects.filter(run_id=run_id).exists()


@pytest.mark.django_db
def test_malformed_json_and_unknown_runs_answer_in_mlflows_shape(mlflow, alice, charlie):
    bad = mlflow(alice, "POST", "runs/log-batch", raw=b"{not json")
    assert bad.status_code == 400 and bad.json()["error_code"] == "MALFORMED_REQUEST"
    run_id = started(mlflow, alice)
    for who, run in ((charlie, run_id), (alice, "abc"), (alice, "99999999")):
        missing = mlflow(who, "GET", "runs/get", {"run_id": run})
        assert missing.status_code == 404 and missing.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


@pytest.mark.django_db
def test_a_viewer_cannot_log(mlflow, alice, bob):
    run_id = started(mlflow, alice)
    refused = mlflow(bob, "POST", "runs/log-metric", {"run_id": run_id, "key": "x", "value": 1, "step": 0})
    assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"


@pytest.mark.django_db
def test_search_runs_with_basic_filters_and_pages(mlflow, alice):
    first = started(mlflow, alice)
    experiment = str(Run.objects.get(pk=first).project_id)
    second = mlflow(alice, "POST", "runs/create", {"experiment_id": experiment, "run_name": "r2"}).json()
    second = second["run"]["info"]["run_id"]
    mlflow(alice, "POST", "runs/log-metric", {"run_id": first, "key": "loss", "value": 0.2, "step": 3})
    mlflow(alice, "POST", "runs/log-metric", {"run_id": second, "key": "loss", "value": 0.9, "step": 3})
    mlflow(alice, "POST", "runs/update", {"run_id": second, "status": "FINISHED"})

    def ids(filter_text: str, **extra) -> list[str]:
        body = {"experiment_ids": [experiment], "filter": filter_text, **extra}
        response = mlflow(alice, "POST", "runs/search", body)
        assert response.status_code == 200, response.json()
        return [r["info"]["run_id"] for r in response.json().get("runs", [])]

    assert ids("metrics.loss < 0.5") == [first]
    assert ids("attributes.status = 'FINISHED'") == [second]
    assert ids("tags.`mlflow.runName` LIKE 'r%' AND metrics.loss >= 0.2") == [second, first]
    assert ids("", max_results=1) == [second]
    bad = mlflow(alice, "POST", "runs/search", {"experiment_ids": [experiment], "filter": "loss <"})
    assert bad.status_code == 400 and bad.json()["error_code"] == "INVALID_PARAMETER_VALUE"


@pytest.mark.django_db
def test_a_param_logged_again_must_keep_its_value(mlflow, alice):
    run_id = started(mlflow, alice)
    first = {"run_id": run_id, "params": [{"key": "lr", "value": "0.1"}]}
    assert mlflow(alice, "POST", "runs/log-batch", first).status_code == 200
    assert (
        mlflow(
            alice, "POST", "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.1"}
        ).status_code
        == 200
    )
    changed = mlflow(alice, "POST", "runs/log-parameter", {"run_id": run_id, "key": "lr", "value": "0.2"})
    assert changed.status_code == 400 and changed.json()["error_code"] == "INVALID_PARAMETER_VALUE"
    assert "Changing param values is not allowed" in changed.json()["message"]
    assert "value='0.1'" in changed.json()["message"] and "'0.2'" in changed.json()["message"]
    # A batch with a changed param is refused whole: its points are not written either.
    batch = {
        "run_id": run_id,
        "metrics": [{"key": "loss", "value": 1.0, "step": 1}],
        "params": [{"key": "bs", "value": "8"}, {"key": "lr", "value": "0.3"}],
    }
    assert mlflow(alice, "POST", "runs/log-batch", batch).status_code == 400
    twice = {"run_id": run_id, "params": [{"key": "wd", "value": "0"}, {"key": "wd", "value": "1"}]}
    doubled = mlflow(alice, "POST", "runs/log-batch", twice)
    assert doubled.status_code == 400 and "Duplicate parameter keys" in doubled.json()["message"]
    run = Run.objects.get(pk=run_id)
    assert run.config["params"] == {"lr": "0.1"} and not MetricPoint.objects.filter(run=run).exists()


@pytest.mark.django_db
def test_a_run_is_renamed_by_update_or_by_its_run_name_tag(mlflow, alice):
    run_id = started(mlflow, alice)
    renamed = mlflow(alice, "POST", "runs/update", {"run_id": run_id, "run_name": "second"})
    assert renamed.status_code == 200 and renamed.json()["run_info"]["run_name"] == "second"
    tag = {"run_id": run_id, "key": "mlflow.runName", "value": "third"}
    assert mlflow(alice, "POST", "runs/set-tag", tag).status_code == 200
    run = Run.objects.get(pk=run_id)
    assert run.name == "third" and "mlflow.runName" not in run.config.get("tags", {})
    got = mlflow(alice, "GET", "runs/get", {"run_id": run_id}).json()["run"]
    assert got["info"]["run_name"] == "third"
    assert {"key": "mlflow.runName", "value": "third"} in got["data"]["tags"]
    empty = mlflow(alice, "POST", "runs/update", {"run_id": run_id, "run_name": " "})
    assert empty.status_code == 400 and "name" in empty.json()["message"]


@pytest.mark.django_db
def test_tags_are_deleted_and_a_viewer_can_neither_delete_runs_nor_tags(mlflow, alice, bob):
    run_id = started(mlflow, alice)
    mlflow(alice, "POST", "runs/set-tag", {"run_id": run_id, "key": "stage", "value": "x"})
    for path, body in (
        ("runs/delete", {"run_id": run_id}),
        ("runs/delete-tag", {"run_id": run_id, "key": "stage"}),
    ):
        refused = mlflow(bob, "POST", path, body)
        assert refused.status_code == 403 and refused.json()["error_code"] == "PERMISSION_DENIED"
    assert mlflow(alice, "POST", "runs/delete-tag", {"run_id": run_id, "key": "stage"}).status_code == 200
    assert "stage" not in Run.objects.get(pk=run_id).config["tags"]
    again = mlflow(alice, "POST", "runs/delete-tag", {"run_id": run_id, "key": "stage"})
    assert again.status_code == 404 and again.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"


MLFLOW_SCRIPT = textwrap.dedent(
    """
    import json, mlflow
    from mlflow import MlflowClient

    mlflow.set_experiment("mlflow-compat")
    with mlflow.start_run(run_name="from-mlflow") as run:
        mlflow.log_params({"lr": 0.001, "batch_size": 32})
        mlflow.log_param("optimizer", "adamw")
        mlflow.set_tags({"team": "ml", "stage": "pretrain"})
        mlflow.set_tag("seed", "7")
        for step in range(200):
            mlflow.log_metrics({"train/loss": 5.0 / (step + 1), "lr": 0.001}, step=step)
        mlflow.log_metric("eval/acc", 0.5, step=199)
    client = MlflowClient()
    got = client.get_run(run.info.run_id)
    history = client.get_metric_history(run.info.run_id, "train/loss")
    found = mlflow.search_runs(filter_string="metrics.`eval/acc` > 0.4", output_format="list")
    print(json.dumps({
        "run_id": run.info.run_id,
        "status": got.info.status,
        "params": got.data.params,
        "tags": {k: v for k, v in got.data.tags.items() if not k.startswith("mlflow.")},
        "history": len(history),
        "last": history[-1].value,
        "found": [r.info.run_id for r in found],
    }))
    """
)


def test_the_real_mlflow_client_logs_into_runwright(transactional_db, alice, tmp_path, api):
    pytest.importorskip("mlflow")
    with web_server(tmp_path / "web.log") as base:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            "MLFLOW_TRACKING_URI": base,
            "MLFLOW_TRACKING_TOKEN": create_api_token(alice),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        }
        done = subprocess.run(
            [sys.executable, "-c", MLFLOW_SCRIPT], env=env, capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["status"] == "FINISHED" and seen["history"] == 200 and seen["last"] == 5.0 / 200
    assert seen["params"] == {"lr": "0.001", "batch_size": "32", "optimizer": "adamw"}
    assert seen["tags"] == {"team": "ml", "stage": "pretrain", "seed": "7"}
    assert seen["found"] == [seen["run_id"]]

    # And Runwright's own API shows the run, its config and its curves.
    project = Project.objects.get(name="mlflow-compat")
    listed = api(alice, "GET", f"/api/v1/projects/{project.id}/runs").json()["runs"]
    assert [(r["id"], r["name"], r["status"], r["source"]) for r in listed] == [
        (int(seen["run_id"]), "from-mlflow", "completed", "external")
    ]
    detail = api(alice, "GET", f"/api/v1/runs/{seen['run_id']}").json()
    assert detail["config"]["params"] == {"lr": "0.001", "batch_size": "32", "optimizer": "adamw"}
    assert detail["step"] == 199
    curve = api(alice, "GET", f"/api/v1/runs/{seen['run_id']}/metrics", {"key": "train/loss"}).json()
    assert curve["steps"] == list(range(200)) and curve["values"][0] == 5.0


def test_a_member_of_no_team_gets_a_personal_team_for_the_default_experiment(transactional_db, mlflow):
    loner = make_user("loner", None)
    response = mlflow(loner, "POST", "runs/create", {"experiment_id": "0"})
    assert response.status_code == 200, response.json()
    assert Run.objects.get().project.name == "Default"


SEARCH_SCRIPT = textwrap.dedent(
    """
    import json, mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    experiment = mlflow.set_experiment("searched")
    ids = {}
    for name, loss, lr in (("a", 0.9, "0.1"), ("b", 0.2, "0.01"), ("c", 0.5, "0.1")):
        with mlflow.start_run(run_name=name) as run:
            mlflow.log_param("lr", lr)
            mlflow.log_metric("loss", loss, step=1)
            ids[name] = run.info.run_id
    client = MlflowClient()
    out = {"ids": ids}
    frame = mlflow.search_runs(filter_string="params.lr = '0.1' AND metrics.loss > 0.1", order_by=["metrics.loss DESC"])
    out["frame"] = list(frame["tags.mlflow.runName"])
    listed = mlflow.search_runs(order_by=["params.lr ASC", "attributes.run_name DESC"], output_format="list")
    out["ordered"] = [r.info.run_name for r in listed]
    pages, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=2, order_by=["metrics.loss"], page_token=token)
        pages.append([r.info.run_name for r in page])
        token = page.token
        if not token:
            break
    out["pages"] = pages
    try:
        mlflow.search_runs(filter_string="metrics.loss ~ 1")
    except MlflowException as exc:
        out["bad_filter"] = [exc.error_code, exc.message]
    with mlflow.start_run(run_id=ids["a"]):
        mlflow.log_param("lr", "0.1")  # the same value again: fine
        try:
            mlflow.log_param("lr", "0.5")
        except MlflowException as exc:
            out["relog"] = [exc.error_code, exc.message]
        mlflow.set_tag("mlflow.runName", "a-renamed")
    client.update_run(ids["b"], name="b-renamed")
    client.delete_run(ids["c"])
    out["after_delete"] = sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id]))
    out["deleted_stage"] = client.get_run(ids["c"]).info.lifecycle_stage
    client.restore_run(ids["c"])
    out["after_restore"] = sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id]))
    print(json.dumps(out))
    """
)


def test_the_real_mlflow_client_searches_renames_and_deletes(transactional_db, alice, tmp_path):
    pytest.importorskip("mlflow")
    with web_server(tmp_path / "web.log") as base:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")},
            "MLFLOW_TRACKING_URI": base,
            "MLFLOW_TRACKING_TOKEN": create_api_token(alice),
            "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        }
        done = subprocess.run(
            [sys.executable, "-c", SEARCH_SCRIPT], env=env, capture_output=True, text=True, timeout=300
        )
    assert done.returncode == 0, done.stderr[-4000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["frame"] == ["a", "c"]
    assert seen["ordered"] == ["b", "c", "a"]  # "0.01" < "0.1" as text, then names descending
    assert seen["pages"] == [["b", "c"], ["a"]]
    assert seen["bad_filter"][0] == "INVALID_PARAMETER_VALUE" and "comparator" in seen["bad_filter"][1]
    assert seen["relog"][0] == "INVALID_PARAMETER_VALUE" and "Changing param values" in seen["relog"][1]
    assert seen["after_delete"] == ["a-renamed", "b-renamed"] and seen["deleted_stage"] == "deleted"
    assert seen["after_restore"] == ["a-renamed", "b-renamed", "c"]
    assert Run.objects.get(pk=seen["ids"]["c"]).archived is False
