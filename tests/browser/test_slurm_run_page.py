"""A run under the Slurm launcher in a browser: its job, why it waits, and its output one click away."""

from __future__ import annotations

from browser_support import log_in

from modelcore.config import resolve
from webapp.runs.models import Run, RunStatus


def test_run_page_shows_the_pending_slurm_job_and_links_its_output(
    alice_project, start_servers, chromium, monkeypatch, tmp_path
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    run = Run.objects.create(
        project=alice_project,
        name="slurm run",
        preset="tiny-cpu",
        config=resolve("tiny-cpu").to_dict(),
        status=RunStatus.STARTING,
        slurm_job_id="4242",
        slurm_state="PENDING",
        slurm_reason="Resources",
    )
    run_dir = tmp_path / "data" / "runs" / str(run.id)  # the server's data directory (start_servers)
    run_dir.mkdir(parents=True)
    (run_dir / "slurm-4242.out").write_text("rank 0: step 1 loss 5.5\n")
    (run_dir / "slurm-4242.err").write_text("")
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{run.id}/")
    box = page.locator("#run-slurm")
    assert box.is_visible()
    assert "Slurm job 4242" in box.inner_text() and "waiting: Resources" in box.inner_text()
    assert page.locator("#run-slurm a", has_text="stdout").get_attribute("href") == (
        f"/runs/{run.id}/files/slurm-4242.out"
    )
    page.screenshot(path="/tmp/runwright-slurm-run.png", full_page=True)
    assert js_errors == []
