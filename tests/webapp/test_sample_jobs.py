"""Sampling from and exporting a run checkpoint, the web side: who may start and read jobs,
bounded settings (a field error, never a 500), the history, the export archive, the run page."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from webapp import enqueue
from webapp.runs.models import Checkpoint, RunStatus
from webapp.samples.models import SampleJob, SampleKind, SampleStatus

STEP = 20


@pytest.fixture
def ckpt_run(make_run):
    """A completed run with a kept checkpoint folder on disk (the web never loads it)."""
    run = make_run(RunStatus.COMPLETED)
    path = run.run_dir / "checkpoints" / "step_000020"
    path.mkdir(parents=True)
    (path / "meta.json").write_text("{}")
    Checkpoint.objects.create(run=run, step=STEP, path="checkpoints/step_000020")
    return run


@pytest.fixture(autouse=True)
def data_dir(settings, tmp_path):
    settings.DATA_DIR = tmp_path / "data"
    settings.RUNS_DIR = settings.DATA_DIR / "runs"


def start(client, run, body, *, as_json=True):
    url = f"/runs/{run.id}/sample"
    if as_json:
        return client.post(url, json.dumps(body), content_type="application/json")
    return client.post(url, body)


def test_member_starts_a_sample_sent_to_a_worker_after_commit(
    client_for, alice, ckpt_run, django_capture_on_commit_callbacks, monkeypatch
):
    sent = []
    monkeypatch.setattr(enqueue.app, "send_task", lambda name, args, **kw: sent.append((name, args)))
    body = {"step": STEP, "prompt": "Once upon", "temperature": "0.5", "top_p": 0.9, "max_tokens": "64"}
    with django_capture_on_commit_callbacks(execute=True):
        response = start(client_for(alice), ckpt_run, body)
    assert response.status_code == 201, response.content
    job = SampleJob.objects.get(pk=response.json()["id"])
    assert (job.kind, job.status, job.prompt) == (SampleKind.SAMPLE, SampleStatus.QUEUED, "Once upon")
    assert (job.temperature, job.top_p, job.max_tokens, job.created_by) == (0.5, 0.9, 64, alice)
    assert sent == [(enqueue.RUN_SAMPLE_JOB, (job.id,))]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"max_tokens": 10**9}, "max_tokens"),
        ({"max_tokens": "1e3"}, "max_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"prompt": "x" * 4001}, "prompt"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": ["a list"]}, "prompt"),
        ({"prompt": "a\x00b"}, "prompt"),
        ({"temperature": "nan"}, "temperature"),
        ({"temperature": 3}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": "1.5"}, "top_p"),
        ({"step": 999}, "step"),
        ({"step": "٢٠"}, "step"),  # Arabic-Indic digits: not a step
        ({"step": None}, "step"),
    ],
)
def test_bad_settings_are_field_errors(client_for, alice, ckpt_run, change, field):
    body = {"step": STEP, "prompt": "hi", "temperature": 0.8, "top_p": 1, "max_tokens": 10, **change}
    response = start(client_for(alice), ckpt_run, body)
    assert response.status_code == 400
    assert field in response.json()["errors"]
    assert not SampleJob.objects.exists()


def test_a_body_that_is_not_an_object_is_a_400(client_for, alice, ckpt_run):
    client = client_for(alice)
    for raw in (b"[1]", b"{", "null"):
        response = client.post(f"/runs/{ckpt_run.id}/sample", raw, content_type="application/json")
        assert response.status_code == 400 and "body" in response.json()["errors"]


def test_a_form_post_works_too(client_for, alice, ckpt_run, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):
        response = start(
            client_for(alice), ckpt_run, {"step": "20", "prompt": "hi", "max_tokens": "5"}, as_json=False
        )
    assert response.status_code == 201 and SampleJob.objects.get().max_tokens == 5


def test_viewer_reads_the_history_but_cannot_start(client_for, alice, bob, ckpt_run):
    SampleJob.objects.create(
        run=ckpt_run,
        checkpoint_step=STEP,
        prompt="p",
        text="q",
        status=SampleStatus.COMPLETED,
        created_by=alice,
    )
    client = client_for(bob)
    response = start(client, ckpt_run, {"step": STEP, "prompt": "hi"})
    assert response.status_code == 403 and b"member" in response.content
    assert client.post(f"/runs/{ckpt_run.id}/checkpoints/{STEP}/export").status_code == 403
    assert SampleJob.objects.count() == 1
    history = client.get(f"/runs/{ckpt_run.id}/sample-jobs").json()
    assert [(j["prompt"], j["text"], j["created_by"]) for j in history["samples"]] == [("p", "q", "alice")]
    job_id = history["samples"][0]["id"]
    assert client.get(f"/sample-jobs/{job_id}/").json()["status"] == SampleStatus.COMPLETED


def test_another_team_gets_404(client_for, charlie, alice, ckpt_run):
    job = SampleJob.objects.create(run=ckpt_run, checkpoint_step=STEP, prompt="p", created_by=alice)
    client = client_for(charlie)
    assert start(client, ckpt_run, {"step": STEP, "prompt": "hi"}).status_code == 404
    assert client.get(f"/runs/{ckpt_run.id}/sample-jobs").status_code == 404
    assert client.get(f"/sample-jobs/{job.id}/").status_code == 404
    assert client.get(f"/sample-jobs/{job.id}/stream").status_code == 404
    assert client.get(f"/sample-jobs/{job.id}/archive").status_code == 404


def test_export_archive_streams_the_folder_for_viewers(
    client_for, alice, bob, ckpt_run, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False):
        response = client_for(alice).post(f"/runs/{ckpt_run.id}/checkpoints/{STEP}/export")
    assert response.status_code == 201
    job = SampleJob.objects.get(pk=response.json()["id"])
    assert job.kind == SampleKind.EXPORT and job.status == SampleStatus.QUEUED
    client = client_for(bob)
    assert client.get(f"/sample-jobs/{job.id}/archive").status_code == 404  # not completed yet
    job.export_dir.mkdir(parents=True)
    (job.export_dir / "config.json").write_text('{"model_type": "llama"}')
    (job.job_dir / "job.log").write_text("not in the archive")
    SampleJob.objects.filter(pk=job.pk).update(status=SampleStatus.COMPLETED)
    response = client.get(f"/sample-jobs/{job.id}/archive")
    assert response.status_code == 200
    body = b"".join(_drain(response))
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = tar.getnames()
    assert names == [f"run{ckpt_run.id}-step{STEP}-hf", f"run{ckpt_run.id}-step{STEP}-hf/config.json"]
    # The checkpoints panel offers the archive once it exists.
    page = client.get(f"/runs/{ckpt_run.id}/checkpoints").content.decode()
    assert f"/sample-jobs/{job.id}/archive" in page


def test_export_of_a_step_without_a_checkpoint_is_a_field_error(client_for, alice, ckpt_run):
    response = client_for(alice).post(f"/runs/{ckpt_run.id}/checkpoints/7/export")
    assert response.status_code == 400 and "step" in response.json()["errors"]


def test_run_page_has_the_box_for_members_and_the_history_for_viewers(client_for, alice, bob, ckpt_run):
    page = client_for(alice).get(f"/runs/{ckpt_run.id}/").content.decode()
    assert 'id="sample-form"' in page and 'data-export-step="20"' in page and "sample_box.js" in page
    page = client_for(bob).get(f"/runs/{ckpt_run.id}/").content.decode()
    assert 'id="run-sample-box"' in page and 'id="sample-form"' not in page
    assert "data-export-step" not in page


def _drain(response):
    import asyncio

    async def collect():
        return [chunk async for chunk in response.streaming_content]

    return asyncio.run(collect())


def test_member_cancels_a_queued_job_and_a_running_one_is_asked_to_stop(client_for, alice, bob, ckpt_run):
    queued = SampleJob.objects.create(run=ckpt_run, checkpoint_step=STEP, prompt="p")
    running = SampleJob.objects.create(
        run=ckpt_run, checkpoint_step=STEP, prompt="p", status=SampleStatus.RUNNING
    )
    assert client_for(bob).post(f"/sample-jobs/{queued.id}/cancel").status_code == 403
    client = client_for(alice)
    assert client.post(f"/sample-jobs/{queued.id}/cancel").json()["status"] == SampleStatus.CANCELLED
    assert client.post(f"/sample-jobs/{running.id}/cancel").status_code == 200
    running.refresh_from_db()
    assert running.status == SampleStatus.RUNNING and running.cancel_requested  # its runner stops it
    response = client.post(f"/sample-jobs/{queued.id}/cancel")
    assert response.status_code == 400 and "job" in response.json()["errors"]
