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
