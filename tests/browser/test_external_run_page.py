"""An external run (logged by the SDK over the API) on the run page: its params, its curve, no trainer defaults."""

from __future__ import annotations

import pytest
from browser_support import log_in
from playwright.sync_api import expect

from webapp.accounts.services import create_api_token

pytestmark = pytest.mark.browser


@pytest.fixture
def sdk_run(start_servers, alice_project, tmp_path) -> tuple[str, int]:
    """(server URL, run id) of a run the SDK logged; made before Chromium starts (the ORM is sync-only)."""
    import runwright  # sdk/, installed by `make install` (tests/sdk/conftest.py also puts it on the path)

    base = start_servers()
    token = create_api_token(alice_project.created_by)
    config = {"optim": {"lr": 0.0003}, "batch_size": 32}
    with runwright.init(
        alice_project.name, "from-a-laptop", config=config, url=base, token=token, dir=tmp_path / "run"
    ) as run:
        for step in range(200):
            run.log({"train/loss": 4.0 / (step + 1) + 1.0}, step=step)
        run.log_text("hello from outside")
    return base, run.id


def test_an_sdk_run_shows_its_params_and_curve(sdk_run, chromium):
    base, run_id = sdk_run
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{run_id}/")
    expect(page.locator("#run-log")).to_contain_text("hello from outside")
    expect(page.locator(".config")).to_contain_text("params.optim.lr")
    expect(page.locator(".config")).not_to_contain_text("model.d_model")
    expect(page.locator(".run-stats")).not_to_contain_text("None")  # an external run has no max_steps
    expect(page.locator("#run-charts .js-plotly-plot").first).to_be_visible()
    page.screenshot(path="/tmp/runwright-external-run.png", full_page=True)
    assert js_errors == []


@pytest.fixture
def run_with_checkpoints(start_servers, alice_project) -> tuple[str, int]:
    """(server URL, run id) of an external run whose client reported two checkpoints over the API."""
    import json
    import urllib.request

    base = start_servers()
    token = create_api_token(alice_project.created_by)

    def post(path: str, body: dict) -> dict:
        request = urllib.request.Request(
            base + path,
            data=json.dumps(body).encode(),
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())

    run = post(f"/api/v1/projects/{alice_project.id}/runs", {"source": "external", "name": "cluster-run"})
    events = [
        {"seq": 1, "type": "metric", "step": 100, "values": {"train/loss": 2.5, "val/loss": 2.75}},
        {"seq": 2, "type": "checkpoint", "step": 100, "path": "/scratch/ana/ckpt/step_000100"},
        {"seq": 3, "type": "checkpoint", "step": 200, "path": "/scratch/ana/ckpt/step_000200"},
    ]
    post(f"/api/v1/runs/{run['id']}/events", {"events": events})
    return base, run["id"]


def test_an_external_runs_checkpoints_are_listed_as_not_downloadable(run_with_checkpoints, chromium):
    base, run_id = run_with_checkpoints
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{run_id}/")
    rows = page.locator("#checkpoints-table tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("external, not downloadable")
    expect(rows.first).to_contain_text("/scratch/ana/ckpt/step_000200")
    expect(rows.nth(1)).to_contain_text("2.7500")  # val/loss at that step
    expect(page.locator("#run-checkpoints a", has_text="Download")).to_have_count(0)
    page.locator("#run-checkpoints").screenshot(path="/tmp/runwright-mlflow-external-checkpoints.png")
    assert js_errors == []
