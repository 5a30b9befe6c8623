"""In Chromium: sample from a run's checkpoint (a real worker generates; the text appears on the
run page as it streams, then in the history), and export the checkpoint to a Hugging Face archive.

Screenshots land in /tmp/runwright-sample-*.png.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
import torch
from browser_support import log_in, workers_available
from playwright.sync_api import expect

from modelcore.checkpoint import save_weights_checkpoint
from modelcore.config import RunConfig, preset
from modelcore.model import Transformer
from modelcore.tokenizer import ByteTokenizer
from webapp.runs.models import Checkpoint, Run, RunStatus
from webapp.samples.models import SampleJob, SampleStatus

SHOTS = Path("/tmp")
STEP = 10


@pytest.fixture
def checkpointed_run(alice_project, settings, tmp_path) -> Run:
    settings.RUNS_DIR = tmp_path / "data" / "runs"  # the servers' data directory (start_servers)
    cfg = preset("tiny-cpu")
    run = Run.objects.create(
        project=alice_project,
        name="sampled run",
        preset="tiny-cpu",
        config=cfg.to_dict(),
        status=RunStatus.COMPLETED,
        created_by=alice_project.created_by,
    )
    torch.manual_seed(0)
    model = Transformer(RunConfig.from_dict(run.config).model)
    path = save_weights_checkpoint(run.run_dir, STEP, model, cfg, ByteTokenizer())
    Checkpoint.objects.create(run=run, step=STEP, path=str(path.relative_to(run.run_dir)))
    return run


def test_sample_streams_to_the_page_and_export_gives_an_archive(
    checkpointed_run, start_servers, chromium, monkeypatch
):
    # The test reads the database between page steps, inside Playwright's event loop.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    if not workers_available():
        pytest.skip("needs the workers package: a real worker samples")
    base = start_servers(worker=True)
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{checkpointed_run.id}/")
    expect(page.locator("#sample-history-empty")).to_be_visible()

    # A field error is shown, never sent to a worker.
    page.fill("#sample-prompt", "Once upon a time")
    page.fill("#sample-max-tokens", "100000")
    page.evaluate("document.getElementById('sample-max-tokens').removeAttribute('max')")
    page.click("#sample-button")
    expect(page.locator("#sample-error")).to_contain_text("max_tokens")
    assert not SampleJob.objects.exists()

    page.fill("#sample-max-tokens", "100")
    page.fill("#sample-temperature", "0.9")
    page.click("#sample-button")
    # The text grows on the page while the worker generates, then the job ends completed.
    page.wait_for_function("() => document.getElementById('sample-text-new').textContent.length > 0")
    expect(page.locator("#sample-status")).to_have_text("completed", timeout=120_000)
    job = SampleJob.objects.get()
    assert job.status == SampleStatus.COMPLETED and job.text
    expect(page.locator("#sample-text-new")).to_have_text(job.text)
    expect(page.locator("#sample-history tbody tr")).to_have_count(1)
    expect(page.locator("#sample-history")).to_contain_text("Once upon a time")
    page.locator("#run-sample-box").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "runwright-sample-box.png"), full_page=True)

    # Export the checkpoint: the action turns into the archive's link once the worker is done.
    page.click(f"[data-export-step='{STEP}']")
    archive = page.locator("#run-checkpoints a:has-text('HF archive')")
    expect(archive).to_be_visible(timeout=120_000)
    response = page.request.get(base + archive.get_attribute("href"))
    assert response.status == 200
    with tarfile.open(fileobj=io.BytesIO(response.body())) as tar:
        names = tar.getnames()
    top = f"run{checkpointed_run.id}-step{STEP}-hf"
    assert {f"{top}/config.json", f"{top}/model.safetensors"} <= set(names)
    expect(page.locator("#sample-text-new")).to_have_text(job.text)  # the export's state is not the sample's
    page.locator("#run-checkpoints").scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "runwright-sample-export.png"), full_page=True)
    page.set_viewport_size({"width": 1000, "height": 900})
    page.screenshot(path=str(SHOTS / "runwright-sample-narrow.png"), full_page=True)
    assert js_errors == []
