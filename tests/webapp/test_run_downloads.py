"""Downloads from the run page: raw chart CSVs, the run's files and its checkpoints, for viewers
too, never for another team, never a file outside the run directory."""

from __future__ import annotations

import csv
import io
import tarfile

import pytest
from asgiref.sync import async_to_sync
from django.urls import reverse

from modelcore.config import resolve
from webapp.metrics.services import Point, upsert_points
from webapp.runs import transitions
from webapp.runs.models import Checkpoint, Run, RunStatus
from webapp.runs.selectors import checkpoints_panel


@pytest.fixture
def run(project, settings, tmp_path) -> Run:
    settings.RUNS_DIR = tmp_path / "runs"
    run = Run.objects.create(
        project=project, name="r", config=resolve("tiny-cpu").to_dict(), status=RunStatus.COMPLETED
    )
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "config.json").write_text('{"model": {}}')
    (run.run_dir / "events.jsonl").write_text("")
    for step in (10, 20, 30):
        folder = run.run_dir / "checkpoints" / f"step_{step:06d}"
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(bytes(range(256)) * (step + 1))
        (folder / "meta.json").write_text(f'{{"step": {step}}}')
    transitions.record_checkpoints(
        run.id, [{"step": s, "path": f"checkpoints/step_{s:06d}"} for s in (10, 20, 30)]
    )
    upsert_points(run.id, [Point("train/loss", s, 10.0 / s, 1e9 + s) for s in range(1, 31)])
    upsert_points(run.id, [Point("val/loss", 20, 1.25, 1e9 + 20)])
    return run


def _get(client, user, route, **kwargs):
    client.force_login(user)
    query = kwargs.pop("query", "")
    response = client.get(reverse(f"runs:{route}", kwargs=kwargs) + query)
    return response, _body(response)


def _body(response) -> bytes:
    if not response.streaming:
        return response.content
    if not response.is_async:
        return b"".join(response.streaming_content)

    async def read() -> bytes:  # what an ASGI server does with the downloads' async bodies
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()


def test_a_viewer_downloads_the_raw_points_of_a_window_as_csv(client, bob, run):
    response, body = _get(client, bob, "series_csv", run_id=run.id, query="?key=train/loss&since=4&until=7")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body.decode())))
    assert [(r["key"], int(r["step"]), float(r["value"])) for r in rows] == [
        ("train/loss", s, 10.0 / s) for s in (5, 6, 7)
    ]


@pytest.mark.parametrize(
    "query, field",
    [("?since=1", "key"), ("?key=train/loss&since=x1", "since"), ("?key=a&until=%D9%A1", "until")],
)
def test_bad_csv_parameters_are_a_400_naming_the_field(client, alice, run, query, field):
    response, body = _get(client, alice, "series_csv", run_id=run.id, query=query)
    assert response.status_code == 400 and field in response.json()["errors"]


def test_another_team_gets_404_for_every_download(client, charlie, run):
    assert _get(client, charlie, "series_csv", run_id=run.id, query="?key=train/loss")[0].status_code == 404
    assert _get(client, charlie, "file", run_id=run.id, name="config.json")[0].status_code == 404
    assert _get(client, charlie, "checkpoint_download", run_id=run.id, step=30)[0].status_code == 404


def test_run_files_by_name_and_nothing_outside_the_run(client, bob, run, tmp_path):
    response, body = _get(client, bob, "file", run_id=run.id, name="config.json")
    assert response.status_code == 200 and body == b'{"model": {}}'
    (tmp_path / "secret.txt").write_text("secret")
    (run.run_dir / "launcher.log").symlink_to(tmp_path / "secret.txt")  # listed name, but leads out
    for name in ("launcher.log", "../../secret.txt", "checkpoints/step_000010/meta.json", "config.json\x00"):
        assert _get(client, bob, "file", run_id=run.id, name=name)[0].status_code == 404, name
    assert _get(client, bob, "checkpoint_download", run_id=run.id, step=10**30)[0].status_code == 404


def test_a_checkpoint_streams_as_a_tar_of_its_folder(client, bob, run, tmp_path):
    (tmp_path / "secret.txt").write_text("secret")
    (run.run_dir / "checkpoints" / "step_000030" / "escape").symlink_to(tmp_path / "secret.txt")
    response, body = _get(client, bob, "checkpoint_download", run_id=run.id, step=30)
    assert response.status_code == 200 and response["Content-Type"] == "application/x-tar"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        names = sorted(tar.getnames())
        weights = tar.extractfile(f"run{run.id}-step30/model.safetensors").read()
    assert names == [
        f"run{run.id}-step30",
        f"run{run.id}-step30/meta.json",
        f"run{run.id}-step30/model.safetensors",
    ]
    assert weights == bytes(range(256)) * 31


def test_pruned_checkpoints_are_listed_but_not_served(client, alice, run):
    import shutil

    shutil.rmtree(run.run_dir / "checkpoints" / "step_000010")
    assert transitions.forget_missing_checkpoints(run.id, {20, 30}) == [10]
    assert list(run.checkpoints.values_list("step", flat=True)) == [20, 30]  # what evals and resumes see
    panel = checkpoints_panel(run)
    assert [(c["step"], c["pruned"], c["val_loss"]) for c in panel] == [
        (30, False, None),
        (20, False, 1.25),
        (10, True, None),
    ]
    assert panel[0]["size"] == 256 * 31 + len('{"step": 30}')
    assert _get(client, alice, "checkpoint_download", run_id=run.id, step=10)[0].status_code == 404
    # Saved again by a resumed attempt: kept again.
    transitions.record_checkpoints(run.id, [{"step": 10, "path": "checkpoints/step_000010"}])
    assert Checkpoint.objects.filter(run=run, step=10).exists()

    page = _get(client, alice, "detail", run_id=run.id)[1].decode()
    assert "pruned" not in page.split('id="checkpoints-table"')[1].split("</table>")[0]
    assert reverse("runs:checkpoint_download", args=[run.id, 30]) in page
    assert reverse("runs:file", args=[run.id, "events.jsonl"]) in page


def test_a_key_that_looks_like_a_formula_is_quoted_in_the_csv(client, alice, run):
    upsert_points(run.id, [Point("=HYPERLINK(1)", 1, 2.0, 1e9)])
    body = _get(client, alice, "series_csv", run_id=run.id, query="?key=%3DHYPERLINK(1)")[1].decode()
    assert body.splitlines()[1].startswith("'=HYPERLINK(1),1,2.0,")
