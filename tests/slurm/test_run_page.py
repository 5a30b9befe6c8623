"""The run page under the Slurm launcher: the job id, why it waits, its output linked for the team only."""

from __future__ import annotations

from asgiref.sync import async_to_sync

from modelcore.config import preset
from webapp.runs.models import Run, RunStatus


def body(response) -> bytes:
    async def read() -> bytes:  # the downloads' bodies are async, as an ASGI server reads them
        return b"".join([chunk async for chunk in response.streaming_content])

    return async_to_sync(read)()


def slurm_run(project, **fields) -> Run:
    run = Run.objects.create(
        project=project,
        name="on slurm",
        preset="tiny-cpu",
        config=preset("tiny-cpu").to_dict(),
        status=RunStatus.STARTING,
        slurm_job_id="4242",
        **fields,
    )
    run.run_dir.mkdir(parents=True)
    (run.run_dir / "slurm-4242.out").write_text("rank output\n")
    (run.run_dir / "slurm-4242.err").write_text("a warning\n")
    (run.run_dir / "slurm-4242.err.bak").write_text("not a job's output\n")
    return run


def test_the_run_page_shows_the_pending_job_and_links_its_output(client, bob, project):
    run = slurm_run(project, slurm_state="PENDING", slurm_reason="Resources")
    client.force_login(bob)
    page = client.get(f"/runs/{run.id}/").content.decode()
    assert "Slurm job 4242" in page
    assert '<span id="run-slurm-reason">Resources</span>' in page
    assert f'href="/runs/{run.id}/files/slurm-4242.out"' in page
    assert f'href="/runs/{run.id}/files/slurm-4242.err"' in page
    download = client.get(f"/runs/{run.id}/files/slurm-4242.out")
    assert download.status_code == 200 and body(download) == b"rank output\n"
    assert client.get(f"/runs/{run.id}/files/slurm-4242.err.bak").status_code == 404


def test_a_local_run_page_has_no_slurm_block(client, bob, project):
    run = Run.objects.create(project=project, name="local", config=preset("tiny-cpu").to_dict())
    client.force_login(bob)
    assert 'id="run-slurm"' not in client.get(f"/runs/{run.id}/").content.decode()


def test_another_team_cannot_read_the_job_output(client, charlie, project):
    run = slurm_run(project, slurm_state="RUNNING")
    client.force_login(charlie)
    assert client.get(f"/runs/{run.id}/files/slurm-4242.out").status_code == 404
    assert client.get(f"/runs/{run.id}/").status_code == 404
