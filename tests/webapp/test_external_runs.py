"""External runs over the API: created running, fed points, logs, heartbeats and an end by their client.

Runs on SQLite and in the PostgreSQL + Redis pass (tests/webapp is in both).
"""

from __future__ import annotations

import datetime as dt
import json

import pytest
from people import make_user

from webapp.accounts.models import Role
from webapp.annotations.models import RunTag
from webapp.metrics.models import MetricKey, MetricPoint
from webapp.metrics.selectors import series
from webapp.runs import transitions
from webapp.runs.models import Run, RunLog, RunSource, RunStatus
from webapp.runs.selectors import runs_visible_to

pytestmark = pytest.mark.django_db


@pytest.fixture
def dave(team):
    return make_user("dave", team, Role.MEMBER)


@pytest.fixture
def external(api, dave, project, sent_tasks) -> Run:
    response = api(
        dave,
        "POST",
        f"/api/v1/projects/{project.id}/runs",
        {
            "source": "external",
            "name": "laptop",
            "config": {"optim": {"lr": 0.001}, "bs": 32},
            "tags": ["Sdk"],
        },
    )
    assert response.status_code == 201, response.json()
    return Run.objects.get(pk=response.json()["id"])


def post_points(api, user, run_id, points):
    return api(user, "POST", f"/api/v1/runs/{run_id}/metrics", raw=json.dumps(points).encode())


def test_external_run_is_created_running_with_flat_params_and_tags_and_never_launched(external, sent_tasks):
    assert external.source == RunSource.EXTERNAL and external.status == RunStatus.RUNNING
    assert external.config == {"params": {"optim.lr": 0.001, "bs": 32}}
    assert external.heartbeat_at is not None and external.started_at is not None
    assert list(RunTag.objects.filter(run=external).values_list("name", flat=True)) == ["sdk"]
    assert sent_tasks == []


def test_points_go_through_the_shared_ingestion_path_and_are_idempotent(api, dave, external):
    batch = [{"key": "loss", "step": s, "value": 10.0 - s, "time": 1764000000.0 + s} for s in range(50)]
    assert post_points(api, dave, external.id, batch).json()["written"] == 50
    again = post_points(api, dave, external.id, batch[:10] + [{"key": "loss", "step": 49, "value": 0.5}])
    assert again.status_code == 200
    assert MetricPoint.objects.filter(run=external, key="loss").count() == 50
    assert list(MetricKey.objects.filter(run=external).values_list("key", flat=True)) == ["loss"]
    external.refresh_from_db()
    assert external.step == 49 and external.last_loss == 0.5
    # The chart read (summaries included) sees the same points as the table.
    data = series(external, "loss")
    assert data["steps"] == list(range(50)) and data["values"][-1] == 0.5 and data["values"][0] == 10.0
    response = api(dave, "GET", f"/api/v1/runs/{external.id}/metrics", {"key": "loss"})
    assert response.status_code == 200 and response.json()["steps"] == list(range(50))


def test_a_late_batch_of_older_steps_does_not_move_the_run_back(api, dave, external):
    post_points(api, dave, external.id, [{"key": "loss", "step": 100, "value": 1.0}])
    post_points(api, dave, external.id, [{"key": "loss", "step": 5, "value": 9.0}])
    external.refresh_from_db()
    assert external.step == 100 and external.last_loss == 1.0


def test_points_of_an_object_body_and_null_values_are_accepted(api, dave, external):
    body = {
        "points": [
            {"key": "grad/norm", "step": 1, "value": None},
            {"key": "grad/norm", "step": 2, "value": 3},
        ]
    }
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/metrics", body)
    assert response.status_code == 200
    assert list(
        MetricPoint.objects.filter(run=external).order_by("step").values_list("value", flat=True)
    ) == [
        None,
        3.0,
    ]


@pytest.mark.parametrize(
    "raw, field",
    [
        ('[{"key": "loss", "step": 1, "value": NaN}]', "body"),
        ('[{"key": "loss", "step": 1, "value": Infinity}]', "body"),
        ('[{"key": "loss", "step": 1, "value": 1e999}]', "points[0].value"),
        ('[{"key": "loss", "step": -1, "value": 1}]', "points[0].step"),
        ('[{"key": "loss", "step": 99999999999999999999, "value": 1}]', "points[0].step"),
        ('[{"key": "loss", "step": 1.5, "value": 1}]', "points[0].step"),
        ('[{"key": "loss", "step": true, "value": 1}]', "points[0].step"),
        ('[{"key": "lo\\u0007ss", "step": 1, "value": 1}]', "points[0].key"),
        ('[{"key": "loss\\u200b", "step": 1, "value": 1}]', "points[0].key"),
        ('[{"key": "", "step": 1, "value": 1}]', "points[0].key"),
        ('[{"key": " loss", "step": 1, "value": 1}]', "points[0].key"),
        ('[{"key": "x", "step": 1, "value": 1, "extra": 2}]', "points[0].extra"),
        ('[{"key": "x", "step": 1, "value": "1"}]', "points[0].value"),
        ('[{"key": "x", "step": 1, "value": 1, "time": "now"}]', "points[0].time"),
        ('{"points": 3}', "points"),
        ("[1]", "points[0]"),
        ('"loss"', "points"),
    ],
)
def test_hostile_points_are_a_400_naming_the_field(api, dave, external, raw, field):
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/metrics", raw=raw.encode())
    assert response.status_code == 400, response.content
    assert field in response.json()["errors"], response.json()
    assert not MetricPoint.objects.filter(run=external).exists()


def test_a_key_too_long_is_refused(api, dave, external):
    response = post_points(api, dave, external.id, [{"key": "k" * 201, "step": 1, "value": 1}])
    assert response.status_code == 400 and "200 characters" in response.json()["errors"]["points[0].key"]


def test_a_huge_batch_is_refused_whole_with_the_limit(api, dave, external):
    from webapp.external.batches import MAX_POINTS

    batch = [{"key": "loss", "step": s, "value": 1.0} for s in range(MAX_POINTS + 1)]
    response = post_points(api, dave, external.id, batch)
    assert response.status_code == 400
    assert f"at most {MAX_POINTS}" in response.json()["errors"]["points"]
    assert not MetricPoint.objects.filter(run=external).exists()


def test_a_body_over_the_size_limit_is_413(api, dave, external, settings):
    settings.MAX_BODY_MB = 1
    batch = [{"key": "loss", "step": s, "value": 1.0} for s in range(40_000)]
    response = post_points(api, dave, external.id, batch)
    assert response.status_code == 413


def test_viewer_gets_403_and_another_team_404(api, bob, charlie, external):
    point = [{"key": "loss", "step": 1, "value": 1}]
    forbidden = post_points(api, bob, external.id, point)
    assert forbidden.status_code == 403 and "member" in forbidden.json()["error"]
    assert post_points(api, charlie, external.id, point).status_code == 404
    for path in ("events", "logs", "heartbeat", "status", "params"):
        assert api(charlie, "POST", f"/api/v1/runs/{external.id}/{path}", {}).status_code == 404
    assert not MetricPoint.objects.filter(run=external).exists()


def test_viewer_cannot_create_an_external_run(api, bob, project):
    response = api(bob, "POST", f"/api/v1/projects/{project.id}/runs", {"source": "external"})
    assert response.status_code == 403


def test_unknown_source_is_400(api, dave, project):
    response = api(dave, "POST", f"/api/v1/projects/{project.id}/runs", {"source": "elsewhere"})
    assert response.status_code == 400 and "source" in response.json()["errors"]


def test_a_launched_run_takes_no_points_over_the_api(api, alice, make_run):
    run = make_run(status=RunStatus.RUNNING)
    response = post_points(api, alice, run.id, [{"key": "loss", "step": 1, "value": 1}])
    assert response.status_code == 400 and "launched by Runwright" in response.json()["errors"]["run"]


def test_events_logs_and_final_status_in_the_trainers_format(api, dave, external):
    events = [
        {"seq": 1, "time": 1764000000.0, "type": "status", "status": "running"},
        {
            "seq": 2,
            "time": 1764000001.0,
            "type": "metric",
            "step": 10,
            "values": {"train/loss": 3.5, "lr": None},
        },
        {"seq": 3, "time": 1764000002.0, "type": "system", "values": {"cpu/util": 0.5}},
        {"seq": 4, "time": 1764000003.0, "type": "log", "level": "info", "message": "hello"},
        {"seq": 5, "time": 1764000004.0, "type": "status", "status": "completed"},
    ]
    for _ in range(2):  # a resend after a lost answer: the same rows, not twice
        response = api(dave, "POST", f"/api/v1/runs/{external.id}/events", {"events": events[:4]})
        assert response.status_code == 200, response.json()
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/events", {"events": events})
    assert response.status_code == 200 and response.json()["status"] == "completed"
    external.refresh_from_db()
    assert external.status == RunStatus.COMPLETED and external.finished_at is not None
    assert external.step == 10 and external.last_loss == 3.5
    assert MetricPoint.objects.get(run=external, key="cpu/util").step == 10
    assert list(RunLog.objects.filter(run=external).values_list("seq", "message")) == [(4, "hello")]
    # Once ended, more reports are a 409 that says so.
    late = api(dave, "POST", f"/api/v1/runs/{external.id}/events", {"events": events[1:2]})
    assert late.status_code == 409 and "ended" in late.json()["error"]


def test_a_bad_event_refuses_the_request_naming_it(api, dave, external):
    events = [{"seq": 1, "type": "metric", "step": -3, "values": {"x": 1}}]
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/events", {"events": events})
    assert response.status_code == 400 and "step" in response.json()["errors"]["events[0]"]


def test_logs_without_seq_are_numbered_after_the_runs_last(api, dave, external):
    url = f"/api/v1/runs/{external.id}/logs"
    assert api(dave, "POST", url, [{"message": "a", "seq": 7}]).status_code == 200
    assert api(dave, "POST", url, [{"message": "b"}, {"message": "c", "level": "warning"}]).status_code == 200
    bad = api(dave, "POST", url, [{"message": "d", "level": "shout"}])
    assert bad.status_code == 400 and "logs[0].level" in bad.json()["errors"]
    assert list(RunLog.objects.filter(run=external).values_list("seq", "message")) == [
        (7, "a"),
        (8, "b"),
        (9, "c"),
    ]


@pytest.mark.parametrize(
    "logs, field, says",
    [
        (["hello"], "logs[0]", "must be an object like"),
        (
            [{"message": "a"}, {"message": "b", "colour": "red"}],
            "logs[1].colour",
            "expected message, level, time, seq",
        ),
        ([{"message": 3}], "logs[0].message", "must be a string"),
        ([{"message": "a", "time": "now"}], "logs[0].time", "unix time"),
        ([{"message": "a", "seq": 0}], "logs[0].seq", "from 1"),
    ],
)
def test_hostile_logs_are_a_400_naming_the_field(api, dave, external, logs, field, says):
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/logs", logs)
    assert response.status_code == 400, response.content
    assert says in response.json()["errors"][field], response.json()
    assert not RunLog.objects.filter(run=external).exists()


def test_status_finishes_once_and_a_repeat_is_harmless(api, dave, external):
    url = f"/api/v1/runs/{external.id}/status"
    assert api(dave, "POST", url, {"status": "running"}).status_code == 400
    first = api(dave, "POST", url, {"status": "failed", "error": "OOM"})
    assert first.status_code == 200 and first.json()["status"] == "failed"
    assert api(dave, "POST", url, {"status": "failed"}).status_code == 200
    assert api(dave, "POST", url, {"status": "completed"}).status_code == 409
    external.refresh_from_db()
    assert external.error == "OOM"


def test_params_merge_into_the_config(api, dave, external):
    url = f"/api/v1/runs/{external.id}/params"
    response = api(dave, "POST", url, {"config": {"bs": 64, "seed": 1}, "tags": ["b"]})
    assert response.status_code == 200
    assert response.json()["config"] == {"params": {"optim.lr": 0.001, "bs": 64, "seed": 1}}
    assert response.json()["tags"] == ["b", "sdk"]
    assert api(dave, "POST", url, {"config": [1]}).status_code == 400


def test_a_silent_external_run_is_lost_by_the_sweep_and_a_report_takes_it_back(api, dave, external):
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    assert transitions.mark_lost_runs(dt.timedelta(seconds=60), now=later) == [external.id]
    external.refresh_from_db()
    assert external.status == RunStatus.LOST and "client" in external.error
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/heartbeat")
    assert response.status_code == 200 and response.json()["status"] == "running"
    external.refresh_from_db()
    assert external.status == RunStatus.RUNNING and external.error == "" and external.finished_at is None


def test_heartbeats_keep_an_external_run_alive(api, dave, external):
    assert api(dave, "POST", f"/api/v1/runs/{external.id}/heartbeat").status_code == 200
    assert transitions.mark_lost_runs(dt.timedelta(seconds=60)) == []


def test_external_runs_are_listed_like_launched_ones(api, dave, external, project):
    listed = api(dave, "GET", f"/api/v1/projects/{project.id}/runs").json()["runs"]
    assert [(r["id"], r["source"]) for r in listed] == [(external.id, "external")]
    assert external in runs_visible_to(dave)
    assert api(dave, "GET", f"/api/v1/runs/{external.id}").json()["config"]["params"]["bs"] == 32


def test_points_are_published_on_the_runs_live_channel(
    api, dave, external, settings, django_capture_on_commit_callbacks
):
    if not settings.REDIS_URL:
        pytest.skip("needs RUNWRIGHT_REDIS_URL")
    import redis

    from webapp import live

    pubsub = redis.Redis.from_url(settings.REDIS_URL).pubsub()
    pubsub.subscribe(live.channel(external.id))
    assert pubsub.get_message(timeout=5)["type"] == "subscribe"
    with django_capture_on_commit_callbacks(execute=True):
        post_points(api, dave, external.id, [{"key": "loss", "step": 3, "value": 2.0}])
    message = pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
    body = json.loads(message["data"])
    assert body["update"]["points"] == {"loss": [[3, 2.0]]} and body["update"]["status"] == "running"
    assert body["points_through"] - body["points_after"] == 1
    pubsub.close()


def test_the_run_page_shows_an_external_runs_params_not_the_trainers_defaults(client_for, dave, external):
    from django.urls import reverse

    page = client_for(dave).get(reverse("runs:detail", args=[external.id]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "params.optim.lr" in html and "params.bs" in html
    assert "model.d_model" not in html


def test_checkpoint_events_are_listed_as_external_never_read_downloaded_or_evaluated(
    api, client_for, dave, external
):
    from django.urls import reverse

    from webapp.evals.selectors import checkpoints_of_project
    from webapp.runs.models import Checkpoint

    # A folder at the reported path under the run directory is still never offered: the path
    # names a place on the client's machine, and Runwright never resolves a client's path.
    (external.run_dir / "checkpoints" / "step_000010").mkdir(parents=True)
    (external.run_dir / "checkpoints" / "step_000010" / "model.pt").write_bytes(b"x" * 100)
    events = [
        {"seq": 1, "type": "checkpoint", "step": 10, "path": "checkpoints/step_000010"},
        {"seq": 2, "type": "checkpoint", "step": 20, "path": "/home/ana/../../etc/passwd"},
    ]
    for _ in range(2):  # a resend: the same two rows
        response = api(dave, "POST", f"/api/v1/runs/{external.id}/events", {"events": events})
        assert response.status_code == 200, response.json()
    rows = list(Checkpoint.every.filter(run=external).values_list("step", "path", "external"))
    assert rows == [(10, "checkpoints/step_000010", True), (20, "/home/ana/../../etc/passwd", True)]
    assert not Checkpoint.objects.filter(run=external).exists()  # nothing to evaluate, resume or sample
    assert checkpoints_of_project(dave, external.project) == []

    client = client_for(dave)
    panel = client.get(reverse("runs:checkpoints", args=[external.id])).content.decode()
    assert panel.count("external, not downloadable") == 2 and "/home/ana/../../etc/passwd" in panel
    assert "Download" not in panel and "Evaluate" not in panel and "Export to HF" not in panel
    for step in (10, 20):
        assert client.get(reverse("runs:checkpoint_download", args=[external.id, step])).status_code == 404


def test_a_checkpoint_path_too_long_is_a_400_naming_it(api, dave, external):
    events = [{"seq": 1, "type": "checkpoint", "step": 1, "path": "c" * 501}]
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/events", {"events": events})
    assert response.status_code == 400 and "500 characters" in response.json()["errors"]["events[0].path"]


def test_sample_events_are_stored_and_shown_in_the_run_pages_samples_table(api, client_for, dave, external):
    from django.urls import reverse

    from webapp.runs.models import RunSample

    def sample(seq: int, step: int, texts: list[str]) -> dict:
        rows = [{"prompt": f"p{i}", "text": t} for i, t in enumerate(texts)]
        return {"seq": seq, "time": 1764000000.0 + seq, "type": "sample", "step": step, "samples": rows}

    url = f"/api/v1/runs/{external.id}/events"
    for _ in range(2):  # a resend after a lost answer: the same rows, not twice
        response = api(
            dave, "POST", url, {"events": [sample(1, 10, ["ab", "cd"]), sample(2, 20, ["ef", "gh"])]}
        )
        assert response.status_code == 200, response.json()
    assert api(dave, "POST", url, {"events": [sample(3, 20, ["EF", "GH<i>"])]}).status_code == 200
    stored = RunSample.objects.filter(run=external).order_by("step", "index")
    assert list(stored.values_list("step", "index", "prompt", "text")) == [
        (10, 0, "p0", "ab"),
        (10, 1, "p1", "cd"),
        (20, 0, "p0", "EF"),
        (20, 1, "p1", "GH<i>"),
    ]
    html = client_for(dave).get(reverse("runs:samples", args=[external.id])).content.decode()
    assert "cd" in html and "EF" in html and "GH&lt;i&gt;" in html and "GH<i>" not in html


@pytest.mark.parametrize(
    "samples, says",
    [
        ("text", "samples must be a list"),
        ([{"prompt": "p"}], "samples[0] must be an object with string prompt and text"),
        ([{"prompt": "p", "text": 5}], "samples[0] must be an object"),
    ],
)
def test_hostile_sample_events_are_a_400_naming_the_event(api, dave, external, samples, says):
    events = [{"seq": 1, "type": "sample", "step": 5, "samples": samples}]
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/events", {"events": events})
    assert response.status_code == 400 and says in response.json()["errors"]["events[0]"]


def test_too_many_sample_rows_in_one_request_are_refused_whole(api, dave, external):
    from webapp.external.batches import MAX_SAMPLE_ROWS
    from webapp.runs.models import RunSample

    rows = [{"prompt": "p", "text": "t"}] * (MAX_SAMPLE_ROWS // 2 + 1)
    events = [{"seq": i, "type": "sample", "step": i, "samples": rows} for i in (1, 2)]
    response = api(dave, "POST", f"/api/v1/runs/{external.id}/events", {"events": events})
    assert response.status_code == 400 and f"at most {MAX_SAMPLE_ROWS}" in str(response.json()["errors"])
    assert not RunSample.objects.filter(run=external).exists()
