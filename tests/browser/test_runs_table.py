"""Filtering the runs table in the browser: conditions, a tag, chosen columns and a sort, kept in
the address (so a copied URL shows the same table), surviving the live refresh; tags edited inline."""

from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest
from browser_support import log_in

from modelcore.config import resolve
from webapp.annotations.models import RunTag
from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run, RunStatus

SHOT = "/tmp/runwright-runs-table.png"


@pytest.fixture
def runs(alice_project) -> list[Run]:
    made = []
    for name, layers, floor, tags in [
        ("tiny-2l", 2, 3.1, ["baseline"]),
        ("mid-8l", 8, 2.4, ["sweep"]),
        ("big-12l", 12, 1.9, ["sweep"]),
        ("big-12l-diverged", 12, 3.8, ["sweep"]),
    ]:
        run = Run.objects.create(
            project=alice_project,
            name=name,
            preset="tiny-cpu",
            config=resolve("tiny-cpu", {"model": {"n_layers": layers}}).to_dict(),
            status=RunStatus.COMPLETED,
            step=200,
        )
        upsert_points(run.id, [Point("val/loss", s, floor + 2.0 / s, float(s)) for s in range(1, 201, 20)])
        RunTag.objects.bulk_create([RunTag(run=run, name=t) for t in tags])
        made.append(run)
    return made


def shown(page) -> list[str]:
    return page.eval_on_selector_all(
        "#runs-table tbody tr[data-run] td:nth-child(2) a", "els => els.map(e => e.textContent)"
    )


def test_filter_sort_and_tag_runs_in_the_table(runs, start_servers, chromium, monkeypatch):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # a run is created while the page is open
    base = start_servers()
    page, js_errors = chromium
    page.set_viewport_size({"width": 1400, "height": 900})
    log_in(page, base)
    page.goto(f"{base}/projects/{runs[0].project_id}/")
    assert sorted(shown(page)) == sorted(r.name for r in runs)

    page.fill("#runs-where", "model.n_layers>=8; val/loss:min<3")
    page.select_option("#runs-tag", "sweep")
    page.fill("#runs-columns", "model.n_layers, val/loss:min")
    page.click("#runs-apply")
    page.wait_for_selector("th[data-column='val/loss:min']")
    assert sorted(shown(page)) == ["big-12l", "mid-8l"]
    query = parse_qs(urlparse(page.url).query)
    assert query["where"] == ["model.n_layers>=8; val/loss:min<3"] and query["tag"] == ["sweep"]

    # Sort by the chosen metric column, then the other way.
    page.click("th[data-column='val/loss:min'] a")
    page.wait_for_selector("th[data-column='val/loss:min'] a.sorted-asc")
    assert shown(page) == ["big-12l", "mid-8l"]
    page.click("th[data-column='val/loss:min'] a")
    page.wait_for_selector("th[data-column='val/loss:min'] a.sorted-desc")
    assert shown(page) == ["mid-8l", "big-12l"]
    cells = page.eval_on_selector_all(
        "#runs-table tbody tr[data-run]:first-child td.num", "els => els.map(e => e.textContent.trim())"
    )
    assert "8" in cells and "2.411" in cells  # n_layers and min val/loss (2.4 + 2/181, to 4 digits)

    # The copied address shows the same table to someone else (here: a fresh page load).
    shared = page.url
    page.goto(shared)
    assert shown(page) == ["mid-8l", "big-12l"]

    # Tag a run inline; the live refresh (every 2 s) keeps the filtered rows and the new chip.
    row = page.locator("#runs-table tbody tr[data-run]").first
    row.get_by_role("button", name="Add a tag to mid-8l").click()
    page.fill(".tag-input", "keeper")
    page.keyboard.press("Enter")
    page.wait_for_selector("tr[data-run] [data-tag='keeper']")
    page.wait_for_function("() => document.getElementById('runs-updated').textContent.startsWith('Updated')")
    page.wait_for_timeout(2500)
    assert shown(page) == ["mid-8l", "big-12l"]
    assert page.locator("tr[data-run] [data-tag='keeper']").count() == 1
    page.reload()  # stored, not only drawn
    assert page.locator("tr[data-run] [data-tag='keeper']").count() == 1

    # A bad condition names the field instead of failing.
    page.fill("#runs-where", "model.n_layers>>8")
    page.click("#runs-apply")
    page.wait_for_selector("#runs-query-errors")
    assert "where" in page.inner_text("#runs-query-errors")

    # The list follows its project's stream: a run that appears elsewhere shows without a reload.
    streams: list[str] = []
    page.on("request", lambda request: streams.append(request.url) if "/runs/stream" in request.url else None)
    page.goto(f"{base}/projects/{runs[0].project_id}/")
    page.wait_for_function("() => document.getElementById('runs-updated').textContent.startsWith('Updated')")
    Run.objects.create(
        project=runs[0].project,
        name="launched-meanwhile",
        preset="tiny-cpu",
        config=resolve("tiny-cpu").to_dict(),
        status=RunStatus.RUNNING,
    )
    page.wait_for_selector("tr[data-run] >> text=launched-meanwhile", timeout=15_000)
    assert streams and all("live=poll" not in url for url in streams)

    page.goto(shared)
    page.screenshot(path=SHOT, full_page=True)
    assert js_errors == []
