"""The API on django-ninja: its schema and docs page, paged lists, the fleet, sample and export jobs.

schemathesis calls every operation against the schema (test_openapi_schemathesis.py); these
pin what the schema alone cannot: that every route is in it, that pages chain without gaps,
and who sees what.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile

import pytest
from django.urls import reverse

from webapp.accounts.services import issue_api_token
from webapp.fleet.models import Gpu, Host
from webapp.projects.models import Project
from webapp.runs.models import Checkpoint, Run, RunStatus
from webapp.samples.models import SampleJob, SampleKind, SampleStatus


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.RUNS_DIR = settings.DATA_DIR / "runs"


def test_schema_is_openapi_3_and_public(client):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert schema["openapi"].startswith("3.")
    assert schema["components"]["securitySchemes"] == {"ApiAuth": {"type": "http", "scheme": "bearer"}}
    post = schema["paths"]["/api/v1/projects/{project_id}/runs"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert {"$ref": "#/components/schemas/RunIn"} in body["anyOf"]
    assert set(post["responses"]) == {"201", "400", "401", "403", "404"}


def test_every_api_route_is_in_the_schema(client):
    from tests.webapp.test_api_fuzz import API_ROUTES

    paths = client.get("/api/v1/openapi.json").json()["paths"]
    documented = {(p, m.upper()) for p, ops in paths.items() for m in ops}
    for name, template, methods in API_ROUTES:
        if name in ("openapi_json", "docs"):
            continue
        path = template.replace("<int:", "{").replace("<str:", "{").replace(">", "}")
        for method in methods:
            assert (path, method) in documented, f"{method} {path} ({name}) is not in the schema"


def test_docs_page_lists_operations_and_models(client_for, alice):
    page = client_for(alice).get(reverse("api:docs"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'href="/api/v1/openapi.json"' in html
    assert 'id="webapp_api_views_list_runs"' in html and "/api/v1/projects/{project_id}/runs" in html
    assert 'id="model-RunIn"' in html and 'href="#model-RunList"' in html
    assert f'href="{reverse("api:docs")}"' in html  # the nav links it
    assert "cdn" not in html.lower()


def _pages(api, user, path: str, key: str) -> list[list[int]]:
    pages, cursor = [], ""
    for _ in range(10):  # a cursor that never ends would loop forever
        body = api(user, "GET", path, {"limit": 2, "cursor": cursor}).json()
        pages.append([row["id"] for row in body[key]])
        cursor = body["next_cursor"]
        if not cursor:
            return pages
    raise AssertionError(f"no last page after 10: {pages}")


def test_projects_are_paged_by_cursor_without_gaps_or_repeats(api, alice, team, project):
    for name in ("b", "c", "a", "d"):
        Project.objects.create(team=team, name=name, created_by=alice)
    pages = _pages(api, alice, "/api/v1/projects", "projects")
    assert [len(p) for p in pages] == [2, 2, 1]
    ordered = [Project.objects.get(pk=pk).name for page in pages for pk in page]
    assert ordered == ["a", "b", "c", "d", "llm"]


def test_a_project_added_before_the_cursor_does_not_shift_the_next_page(api, alice, team, project):
    for name in ("b", "d"):
        Project.objects.create(team=team, name=name, created_by=alice)
    first = api(alice, "GET", "/api/v1/projects", {"limit": 2}).json()
    assert [p["name"] for p in first["projects"]] == ["b", "d"]
    Project.objects.create(team=team, name="a", created_by=alice)
    second = api(alice, "GET", "/api/v1/projects", {"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [p["name"] for p in second["projects"]] == ["llm"] and second["next_cursor"] is None


def _cursor(values: list) -> str:
    return base64.urlsafe_b64encode(json.dumps(values).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    "path, cursor",
    [
        ("projects", "nonsense"),
        ("projects", _cursor([])),
        ("projects", _cursor(["a", 1])),  # two values for a three-part order
        ("projects", _cursor(["x", "", "x"])),  # the id is not a number
        ("projects", _cursor(["x", "y", True])),
        ("projects", _cursor(["x", "y", 2**70])),
        ("projects", _cursor(["x\u0000", "y", 1])),
        ("tokens", _cursor(["not a time", 5])),  # a value the field's type refuses
    ],
)
def test_a_cursor_that_is_not_ours_is_a_400_naming_it(api, alice, project, path, cursor):
    response = api(alice, "GET", f"/api/v1/{path}", {"cursor": cursor})
    assert response.status_code == 400, response.content
    assert set(response.json()["errors"]) == {"cursor"}


def test_tokens_are_paged_newest_first(api, alice):
    for i in range(3):
        issue_api_token(alice, f"t{i}")
    pages = _pages(api, alice, "/api/v1/tokens", "tokens")
    # The api fixture made one more token per request: every token appears once, newest first.
    ids = [pk for page in pages for pk in page]
    assert len(ids) == len(set(ids)) and ids == sorted(ids, reverse=True)


def test_project_runs_filter_as_the_runs_table_does(api, alice, project, make_run):
    make_run(RunStatus.FAILED, name="bad")
    make_run(RunStatus.COMPLETED, name="good")
    body = api(alice, "GET", f"/api/v1/projects/{project.id}/runs?status=failed&limit=1").json()
    assert [r["name"] for r in body["runs"]] == ["bad"] and body["total"] == 1
    bad = api(alice, "GET", f"/api/v1/projects/{project.id}/runs?where=model.bogus>1")
    assert bad.status_code == 400 and "where" in bad.json()["errors"]


def test_fleet_hosts_name_only_runs_the_caller_may_see(api, alice, charlie, project, make_run, other_team):
    mine = make_run(RunStatus.RUNNING, name="mine")
    theirs_project = Project.objects.create(team=other_team, name="rival", created_by=charlie)
    theirs = Run.objects.create(project=theirs_project, name="secret", config={}, status=RunStatus.RUNNING)
    host = Host.objects.create(name="gpu-1", queue="gpu-1", cpu_slots=0)
    Gpu.objects.create(host=host, index="0", model="H100", memory_mb=81559, run=mine)
    Gpu.objects.create(host=host, index="1", model="H100", memory_mb=81559, run=theirs)
    body = api(alice, "GET", "/api/v1/fleet/hosts").json()
    (seen,) = body["hosts"]
    assert seen["name"] == "gpu-1" and seen["capacity"] == 2 and seen["alive"] is False
    assert seen["gpus"][0]["run"]["name"] == "mine" and not seen["gpus"][0]["held_by_other"]
    assert seen["gpus"][1]["run"] is None and seen["gpus"][1]["held_by_other"]
    assert "secret" not in str(body)
    assert api(None, "GET", "/api/v1/fleet/hosts").status_code == 401


@pytest.fixture
def ckpt_run(make_run):
    run = make_run(RunStatus.COMPLETED)
    path = run.run_dir / "checkpoints" / "step_000020"
    path.mkdir(parents=True)
    (path / "meta.json").write_text("{}")
    Checkpoint.objects.create(run=run, step=20, path="checkpoints/step_000020")
    return run


def test_member_starts_a_sample_and_an_export_and_reads_them(api, alice, ckpt_run, sent_tasks):
    sample = api(
        alice, "POST", f"/api/v1/runs/{ckpt_run.id}/samples", {"step": 20, "prompt": "Once", "max_tokens": 5}
    )
    assert sample.status_code == 201, sample.content
    assert sample.json()["kind"] == "sample" and sample.json()["status"] == "queued"
    export = api(alice, "POST", f"/api/v1/runs/{ckpt_run.id}/exports", {"step": 20})
    assert export.status_code == 201 and export.json()["kind"] == "export"
    job = api(alice, "GET", f"/api/v1/sample-jobs/{sample.json()['id']}").json()
    assert job["prompt"] == "Once" and job["max_tokens"] == 5 and job["is_active"]
    listed = api(alice, "GET", f"/api/v1/runs/{ckpt_run.id}/samples", {"kind": "export"}).json()
    assert [j["id"] for j in listed["jobs"]] == [export.json()["id"]]
    stopped = api(alice, "POST", f"/api/v1/sample-jobs/{sample.json()['id']}/cancel")
    assert stopped.status_code == 200 and stopped.json()["status"] == "cancelled"


def test_sample_settings_are_field_errors(api, alice, ckpt_run):
    response = api(
        alice, "POST", f"/api/v1/runs/{ckpt_run.id}/samples", {"step": 20, "prompt": "x", "top_p": 0}
    )
    assert response.status_code == 400 and set(response.json()["errors"]) == {"top_p"}
    missing = api(alice, "POST", f"/api/v1/runs/{ckpt_run.id}/exports", {"step": 30})
    assert missing.status_code == 400 and set(missing.json()["errors"]) == {"step"}
    unknown = api(alice, "POST", f"/api/v1/runs/{ckpt_run.id}/exports", {"step": 20, "dtype": "bf16"})
    assert unknown.json()["errors"] == {"dtype": "unknown field; expected step"}
    assert not SampleJob.objects.exists()


def test_viewer_reads_jobs_but_may_not_start_one_and_another_team_sees_nothing(api, bob, charlie, ckpt_run):
    job = SampleJob.objects.create(
        run=ckpt_run, checkpoint_step=20, kind=SampleKind.EXPORT, status=SampleStatus.COMPLETED
    )
    assert api(bob, "GET", f"/api/v1/sample-jobs/{job.id}").status_code == 200
    refused = api(bob, "POST", f"/api/v1/runs/{ckpt_run.id}/exports", {"step": 20})
    assert refused.status_code == 403 and "member" in refused.json()["error"]
    # A malformed body changes nothing: the run is looked up (and hidden) first.
    assert api(charlie, "POST", f"/api/v1/runs/{ckpt_run.id}/exports", raw=b"{").status_code == 404
    assert api(charlie, "GET", f"/api/v1/sample-jobs/{job.id}").status_code == 404
    assert SampleJob.objects.count() == 1


def test_a_completed_export_downloads_as_a_tar_over_the_api(api, bob, charlie, ckpt_run):
    job = SampleJob.objects.create(run=ckpt_run, checkpoint_step=20, kind=SampleKind.EXPORT)
    url = f"/api/v1/sample-jobs/{job.id}/archive"
    assert api(bob, "GET", url).status_code == 404  # not completed yet
    job.export_dir.mkdir(parents=True)
    (job.export_dir / "config.json").write_text('{"model_type": "llama"}')
    SampleJob.objects.filter(pk=job.pk).update(status=SampleStatus.COMPLETED)
    response = api(bob, "GET", url)
    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    body = b"".join(_drain(response))
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        assert tar.getnames() == [f"run{ckpt_run.id}-step20-hf", f"run{ckpt_run.id}-step20-hf/config.json"]
    assert api(charlie, "GET", url).status_code == 404


def _drain(response) -> list[bytes]:
    async def collect() -> list[bytes]:
        return [chunk async for chunk in response.streaming_content]

    return asyncio.run(collect())


@pytest.mark.parametrize("limit", ["１０", "٣", "1e3", "-1", "99999999999999999999", "{{7*7}}"])
def test_a_page_limit_that_is_not_a_plain_whole_number_is_a_400_naming_it(api, alice, project, limit):
    # Look-alike digits (fullwidth, Arabic-Indic), exponents, negatives, huge and templates alike.
    answer = api(alice, "GET", "/api/v1/projects", {"limit": limit})
    assert answer.status_code == 400, (limit, answer.status_code, answer.content[:200])
    assert "limit" in answer.json()["errors"]
