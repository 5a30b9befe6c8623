"""A sweep in a browser: created from the project page's form (no workers), its page draws the
parallel-coordinates plot and the trials table, follows new metric values live (its SSE stream, or
polling with ``?live=poll``) and sorts."""

from __future__ import annotations

from browser_support import log_in

from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run
from webapp.sweeps.models import Sweep


def test_sweep_form_then_page_with_plot_and_sortable_table(
    alice_project, start_servers, chromium, monkeypatch
):
    # Playwright's sync API runs an event loop in this thread; the writes below are plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = start_servers()
    page, js_errors = chromium
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    log_in(page, base)
    page.goto(f"{base}/projects/{alice_project.id}/")
    page.click("#project-sweeps")
    page.click("#new-sweep")
    page.fill("#id_name", "lr and depth")
    page.select_option("#id_preset", "tiny-cpu")
    page.select_option("#id_method", "grid")
    page.fill(
        "#id_parameters",
        '{"optim.lr": {"values": [0.001, 0.003]}, "model.n_layers": {"values": [1, 2]}, '
        '"optim.schedule": {"values": ["cosine", "wsd"]}}',
    )
    page.fill("#id_concurrency", "2")
    page.click("#sweep-submit")
    page.wait_for_selector("#sweep-plot.js-plotly-plot")
    sweep = Sweep.objects.get()
    assert page.locator("#sweep-table tbody tr").count() == 8
    assert "No run has logged val/loss yet" in page.locator("#sweep-plot-note").inner_text()
    labels = page.evaluate("() => document.querySelector('#sweep-plot').data[0].dimensions.map(d => d.label)")
    assert labels == ["optim.lr", "model.n_layers", "optim.schedule"]

    # The two launched runs log the metric: the page's stream adds it to the plot and the table.
    first, second = Run.objects.filter(sweep=sweep).order_by("id")
    upsert_points(first.id, [Point("val/loss", 10, 3.5, 0.0)])
    upsert_points(second.id, [Point("val/loss", 10, 2.25, 0.0)])
    page.wait_for_function(
        "() => document.querySelector('#sweep-plot').data[0].dimensions.map(d => d.label).includes('val/loss')",
        timeout=15_000,
    )
    assert "2 of 8 trials have logged val/loss" in page.locator("#sweep-plot-note").inner_text()
    page.click("#sweep-table th[data-column='metric'] a")
    first_row = page.locator("#sweep-table tbody tr").first
    assert first_row.get_attribute("data-trial") == "2" and "2.25" in first_row.inner_text()
    page.click("#sweep-table th[data-column='metric'] a")  # descending: blanks stay last
    assert page.locator("#sweep-table tbody tr").first.get_attribute("data-trial") == "1"
    page.screenshot(path="/tmp/runwright-fleetui-sweep.png", full_page=True)
    assert any(url.endswith(f"/sweeps/{sweep.id}/stream") for url in asked)
    assert not any(f"/sweeps/{sweep.id}/data" in url for url in asked)  # followed, not polled

    # The fallback the client chooses: polling the sweep's JSON, which follows the same changes.
    asked.clear()
    page.goto(f"{base}/sweeps/{sweep.id}/?live=poll")
    page.wait_for_selector("#sweep-plot.js-plotly-plot")
    upsert_points(first.id, [Point("val/loss", 20, 1.125, 0.0)])
    page.wait_for_function(
        "() => document.querySelector('#sweep-table tbody tr[data-trial=\"1\"]').innerText.includes('1.125')",
        timeout=15_000,
    )
    assert any(f"/sweeps/{sweep.id}/data" in url for url in asked)
    assert not any(url.endswith(f"/sweeps/{sweep.id}/stream") for url in asked)
    page.screenshot(path="/tmp/runwright-fleetui-sweep-polled.png", full_page=True)
    assert js_errors == []
