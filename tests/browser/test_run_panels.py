"""The run page's metric panels: a panel per key laid out by prefix, and each panel's controls."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from browser_support import log_in, stored_run
from playwright.sync_api import expect

from webapp.metrics.services import Point, upsert_points
from webapp.runs.models import Run, RunSample, RunStatus

N = 400
TOKENS_PER_STEP = 2048
T0 = 1_764_000_000.0


def noisy_loss(step: int) -> float:
    return 3.0 + 4.0 / step + (0.5 if step % 2 else -0.5)


@pytest.fixture
def run_with_groups(alice_project) -> Run:
    run = stored_run(alice_project, "panels", RunStatus.COMPLETED, N, {"train": {"max_steps": 800}})
    points = []
    for s in range(1, N + 1):
        t = T0 + 2.0 * s
        points += [
            Point("train/loss", s, noisy_loss(s), t),
            Point("train/lr", s, 1e-3 * min(1.0, s / 50), t),
            Point("perf/tokens_per_s", s, 21000.0 + s, t),
            Point("perf/tokens_seen", s, float(s * TOKENS_PER_STEP), t),
            Point("perf/step_time_s", s, 0.1, t),
            Point("system/cpu_util/rank0", s, 0.5, t),
            Point("system/cpu_util/rank1", s, 0.25, t),
            Point("loss_scale", s, 1.0, t),
        ]
        if s % 100 == 0:
            points += [Point("val/loss", s, 3.5 + 1 / s, t), Point("eval/hellaswag/acc_norm", s, 0.3, t)]
    upsert_points(run.id, points)
    return run


def ema_like_tensorboard(values: list[float], weight: float) -> list[float]:
    """TensorBoard's debiased EMA, written out here to check the page against."""
    out, last = [], 0.0
    for n, v in enumerate(values, start=1):
        last = last * weight + (1 - weight) * v
        out.append(last / (1 - weight**n))
    return out


def panel_trace(page, panel_dom_id: str, index: int = 0) -> dict:
    return page.evaluate(
        "([id, i]) => { const t = document.getElementById(id).data[i]; return {x: t.x, y: t.y, n: t.name}; }",
        [panel_dom_id, index],
    )


def open_run(page, base: str, run: Run) -> None:
    page.goto(f"{base}/runs/{run.id}/")
    page.wait_for_function("() => document.getElementById('chart-train-loss').data?.[0]?.x?.length > 0")


def test_a_panel_per_key_grouped_by_prefix_and_remembered(run_with_groups, start_servers, chromium):
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    open_run(page, base, run_with_groups)
    groups = page.eval_on_selector_all(".chart-group", "els => els.map(e => e.dataset.group)")
    assert groups == ["train", "val", "perf", "system", "eval", "other"]
    panels = page.eval_on_selector_all(
        ".chart-group",
        "els => els.map(e => Array.from(e.querySelectorAll('.panel')).map(p => p.dataset.panel))",
    )
    assert panels == [
        ["train/loss", "train/lr"],
        ["val/loss"],
        ["perf/step_time_s", "perf/tokens_per_s", "perf/tokens_seen"],
        ["system/cpu_util"],
        ["eval/hellaswag"],
        ["loss_scale"],
    ]
    # The ranks of a machine are lines of one panel (drawn once scrolled to).
    page.locator("[data-panel='system/cpu_util']").scroll_into_view_if_needed()
    page.wait_for_function("() => document.getElementById('chart-system-cpu_util')?.data?.length === 2")
    names = page.evaluate("() => document.getElementById('chart-system-cpu_util').data.map(t => t.name)")
    assert names == ["system/cpu_util/rank0", "system/cpu_util/rank1"]

    # The header's figures come from the latest points.
    expect(page.locator("#run-tokens-per-s")).to_have_text("21.4k")
    expect(page.locator("#run-tokens-seen")).to_have_text("819k")
    expect(page.locator("#run-lr")).to_have_text("1.00e-3")
    assert page.locator("#run-progress").get_attribute("style") == "width: 50%;"

    # Hide a panel, move another, fold a group: the page of any run of the project remembers.
    page.get_by_role("button", name="Hide train/lr").click()
    page.locator("[data-panel='perf/tokens_seen']").scroll_into_view_if_needed()  # made when near
    page.get_by_role("button", name="Move perf/tokens_seen left").click()
    page.locator(".chart-group[data-group=eval] > summary").click()
    open_run(page, base, run_with_groups)
    expect(page.locator("[data-panel='train/lr']")).to_be_hidden()
    perf = page.eval_on_selector_all(
        ".chart-group[data-group=perf] .panel", "els => els.map(p => p.dataset.panel)"
    )
    assert perf == ["perf/step_time_s", "perf/tokens_seen", "perf/tokens_per_s"]
    assert page.evaluate("() => document.querySelector('.chart-group[data-group=eval]').open") is False
    page.get_by_role("button", name="show 1 hidden").click()
    expect(page.locator("[data-panel='train/lr']")).to_be_visible()

    for width in (1400, 1000):
        page.set_viewport_size({"width": width, "height": 900})
        page.wait_for_timeout(300)
        page.screenshot(path=f"/tmp/runwright-run-panels-{width}.png", full_page=True)
        # Nothing overlaps: the panels of a row sit side by side, inside the page.
        boxes = page.eval_on_selector_all(
            ".chart-group[open] .panel:not([hidden])",
            "els => els.map(e => { const r = e.getBoundingClientRect(); return [r.left, r.top, r.right, r.bottom]; })",
        )
        for i, a in enumerate(boxes):
            assert a[2] <= width
            for b in boxes[i + 1 :]:
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    assert js_errors == []


def test_smoothing_changes_the_line_and_the_csv_stays_raw(run_with_groups, start_servers, chromium):
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    open_run(page, base, run_with_groups)
    raw = panel_trace(page, "chart-train-loss")
    assert raw["y"] == [noisy_loss(s) for s in range(1, N + 1)]

    slider = page.get_by_label("Smoothing of train/loss")
    slider.evaluate("(el) => { el.value = '0.6'; el.dispatchEvent(new Event('input')); }")
    page.wait_for_function("() => document.getElementById('chart-train-loss').data.length === 2")
    faint, smoothed = panel_trace(page, "chart-train-loss", 0), panel_trace(page, "chart-train-loss", 1)
    assert faint["y"] == raw["y"]  # the raw line stays, faint, behind
    expected = ema_like_tensorboard(raw["y"], 0.6)
    assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(smoothed["y"], expected, strict=True))
    assert max(smoothed["y"][100:]) - min(smoothed["y"][100:]) < 0.5  # the ±0.5 noise is smoothed

    # Zoom to steps 101..200, then download: the raw points of that range, not smoothed ones.
    page.evaluate("() => Plotly.relayout('chart-train-loss', {'xaxis.range': [101, 200]})")
    with page.expect_download() as download:
        page.locator("[data-panel='train/loss'] button.csv").click()
    rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text())))
    assert [int(r["step"]) for r in rows] == list(range(101, 201))
    assert [float(r["value"]) for r in rows] == [noisy_loss(s) for s in range(101, 201)]
    assert {r["key"] for r in rows} == {"train/loss"}

    with page.expect_download() as download:
        page.locator("[data-panel='train/loss'] button.png").click()
    assert Path(download.value.path()).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # The view is remembered for the project.
    open_run(page, base, run_with_groups)
    page.wait_for_function("() => document.getElementById('chart-train-loss').data?.length === 2")
    assert page.get_by_label("Smoothing of train/loss").input_value() == "0.6"
    assert js_errors == []


def test_log_scale_and_x_axis_by_tokens_and_time(run_with_groups, start_servers, chromium):
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    open_run(page, base, run_with_groups)
    page.get_by_label("Log scale of train/loss").check()
    page.wait_for_function(
        "() => document.getElementById('chart-train-loss')._fullLayout.yaxis.type === 'log'"
    )

    page.get_by_label("X axis of train/loss").select_option("tokens")
    page.wait_for_function(
        f"() => document.getElementById('chart-train-loss').data[0].x[0] === {TOKENS_PER_STEP}"
    )
    trace = panel_trace(page, "chart-train-loss")
    assert trace["x"] == [s * TOKENS_PER_STEP for s in range(1, N + 1)]
    title = page.evaluate("() => document.getElementById('chart-train-loss')._fullLayout.xaxis.title.text")
    assert title == "tokens seen"

    page.get_by_label("X axis of train/loss").select_option("relative")
    page.wait_for_function("() => document.getElementById('chart-train-loss').data[0].x[0] !== 2048")
    trace = panel_trace(page, "chart-train-loss")
    assert trace["x"][1] - trace["x"][0] == pytest.approx(2.0 / 3600)

    page.get_by_label("X axis of train/loss").select_option("wall")
    page.wait_for_function(
        "() => document.getElementById('chart-train-loss')._fullLayout.xaxis.type === 'date'"
    )
    trace = panel_trace(page, "chart-train-loss")
    assert trace["x"][0] == (T0 + 2.0) * 1000
    assert js_errors == []


def test_a_panels_controls_are_built_near_the_screen_and_its_saved_view_holds(
    run_with_groups, start_servers, chromium
):
    """A hundred panels cost the first screen: only those near it are made, with their toolbars."""
    base = start_servers()
    page, js_errors = chromium
    page.set_viewport_size({"width": 1360, "height": 400})
    log_in(page, base)
    open_run(page, base, run_with_groups)
    far = page.locator("[data-panel='loss_scale']")
    expect(far).to_have_class("card chart-card panel unbuilt")  # a placeholder: no head, controls, chart
    assert far.evaluate("panel => panel.children.length") == 0
    expect(page.get_by_label("Log scale of train/loss")).to_have_count(1)  # on screen: built
    page.get_by_label("Log scale of train/loss").check()

    far.scroll_into_view_if_needed()
    expect(page.get_by_label("Log scale of loss_scale")).to_have_count(1)
    page.wait_for_function("() => document.getElementById('chart-loss_scale')?.data?.length > 0")

    # A reload keeps the saved view: the chart draws with it and the built controls show it.
    open_run(page, base, run_with_groups)
    page.wait_for_function(
        "() => document.getElementById('chart-train-loss')._fullLayout.yaxis.type === 'log'"
    )
    expect(page.get_by_label("Log scale of train/loss")).to_be_checked()
    assert js_errors == []


ON_SCREEN_PANELS = """() => Array.from(document.querySelectorAll('.panel:not([hidden])')).filter((p) => {
  const r = p.getBoundingClientRect(); return r.top < innerHeight && r.bottom > 0;
}).map((p) => [p.dataset.panel, (p.querySelector('.chart').data || []).map((t) => t.name)])"""


def test_the_first_screens_panels_share_one_read_and_each_draws_its_own_lines(
    run_with_groups, start_servers, chromium
):
    """The server answers a page's requests one at a time: the first screen is one request."""
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    reads: list[list[str]] = []
    page.on(
        "request",
        lambda r: reads.append(parse_qs(urlsplit(r.url).query)["key"]) if "/series" in r.url else None,
    )
    open_run(page, base, run_with_groups)
    page.wait_for_function(f"() => ({ON_SCREEN_PANELS})().every(([id, names]) => names.length > 0)")
    shown = page.evaluate(ON_SCREEN_PANELS)
    assert len(shown) >= 2
    assert sorted(reads[0]) == sorted(name for _, names in shown for name in names)
    for panel, names in shown:  # each panel drew its own keys, none of another's
        assert names and all(name == panel or name.startswith(panel + "/") for name in names)
    assert not any("train/loss" in keys for keys in reads[1:])  # not read again on its own
    lr = panel_trace(page, "chart-train-lr")
    assert lr["n"] == "train/lr" and lr["x"][:2] == [1, 2] and lr["y"][0] == pytest.approx(1e-3 / 50)
    assert js_errors == []


@pytest.fixture
def run_with_samples(alice_project) -> Run:
    run = stored_run(alice_project, "samples", RunStatus.COMPLETED, 20, {"train": {"sample_every": 10}})
    for step, texts in ((10, ["xq zz", "osx"]), (20, ["main():", "os\n<b>sys</b>"])):
        for index, (prompt, text) in enumerate(zip(["def ", "import "], texts, strict=True)):
            RunSample.objects.create(run=run, step=step, index=index, prompt=prompt, text=text, time=T0)
    return run


def test_samples_table_has_a_row_per_prompt_and_a_column_per_step(run_with_samples, start_servers, chromium):
    run = run_with_samples
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{run.id}/")
    table = page.locator("#samples-table")
    assert [t.lower() for t in table.locator("thead th").all_inner_texts()] == [
        "prompt",
        "step 10",
        "step 20",
    ]
    rows = table.locator("tbody tr")
    assert rows.count() == 2
    assert rows.nth(0).locator("td").all_inner_texts() == ["def xq zz", "def main():"]
    assert rows.nth(1).locator("td").nth(1).inner_text() == "import os\n<b>sys</b>"  # text, never markup
    page.locator("#run-samples").scroll_into_view_if_needed()
    page.screenshot(path="/tmp/runwright-samples.png")
    assert js_errors == []


@pytest.fixture
def run_with_checkpoint(alice_project, tmp_path) -> Run:
    from webapp.runs import transitions

    run = stored_run(alice_project, "checkpointed", RunStatus.COMPLETED, 20)
    # The servers' run directory (start_servers gives them tmp_path / "data").
    folder = tmp_path / "data" / "runs" / str(run.id) / "checkpoints" / "step_000020"
    folder.mkdir(parents=True)
    (folder / "model.safetensors").write_bytes(b"weights" * 1000)
    (folder.parent.parent / "config.json").write_text("{}")
    transitions.record_checkpoints(
        run.id, [{"step": s, "path": f"checkpoints/step_{s:06d}"} for s in (10, 20)]
    )
    transitions.forget_missing_checkpoints(run.id, {20})
    return run


def test_checkpoints_panel_lists_kept_and_pruned_and_downloads_a_tar(
    run_with_checkpoint, start_servers, chromium
):
    run = run_with_checkpoint
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{run.id}/")
    rows = page.locator("#checkpoints-table tbody tr")
    assert rows.count() == 2
    assert "kept" in rows.nth(0).inner_text() and "6.8\xa0KB" in rows.nth(0).inner_text()
    assert "pruned" in rows.nth(1).inner_text() and rows.nth(1).get_by_role("link").count() == 0
    with page.expect_download() as download:
        rows.nth(0).get_by_role("link", name="Download").click()
    assert download.value.suggested_filename == f"run{run.id}-step20.tar"
    import tarfile

    with tarfile.open(download.value.path()) as tar:
        assert tar.extractfile(f"run{run.id}-step20/model.safetensors").read() == b"weights" * 1000
    page.locator("#run-checkpoints").scroll_into_view_if_needed()
    page.screenshot(path="/tmp/runwright-checkpoints.png")
    assert js_errors == []


@pytest.fixture
def live_run(alice_project) -> Run:
    run = stored_run(alice_project, "live panels", RunStatus.RUNNING, 2)
    upsert_points(run.id, [Point("train/loss", s, 5.0 - s / 10, T0 + s) for s in (1, 2)])
    return run


def test_keys_that_arrive_live_get_their_panels_and_the_header_follows(
    live_run, start_servers, chromium, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")  # the writes below run beside Playwright
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    page.goto(f"{base}/runs/{live_run.id}/")
    page.wait_for_function("() => document.getElementById('chart-train-loss').data?.[0]?.x?.length === 2")
    page.get_by_label("Smoothing of train/loss").evaluate(
        "(el) => { el.value = '0.5'; el.dispatchEvent(new Event('input')); }"
    )
    upsert_points(
        live_run.id,
        [Point("train/loss", 3, 4.7, T0 + 3), Point("train/lr", 3, 2e-4, T0 + 3)]
        + [Point(f"system/cpu_util/rank{r}", 3, 0.5 + r / 10, T0 + 3) for r in (0, 1)],
    )
    Run.objects.filter(pk=live_run.pk).update(step=3)
    # The smoothed panel takes the new point on both of its lines; new keys get panels in their groups.
    page.wait_for_function("() => document.getElementById('chart-train-loss').data[1]?.x?.length === 3")
    page.wait_for_function("() => document.querySelector(\"[data-panel='system/cpu_util']\") !== null")
    groups = page.eval_on_selector_all(".chart-group", "els => els.map(e => e.dataset.group)")
    assert groups == ["train", "system"]
    page.locator("[data-panel='system/cpu_util']").scroll_into_view_if_needed()
    page.wait_for_function("() => document.getElementById('chart-system-cpu_util')?.data?.length === 2")
    expect(page.locator("#run-lr")).to_have_text("2.00e-4")
    expect(page.locator("#run-step")).to_have_text("3")
    assert js_errors == []


MANY_GROUPS = {"train": 30, "val": 30, "perf": 30, "system": 30, "eval": 30, "misc": 50}  # misc → "other"


@pytest.fixture
def run_with_many_keys(alice_project) -> Run:
    run = stored_run(alice_project, "many keys", RunStatus.COMPLETED, 5, {"train": {"max_steps": 800}})
    keys = ["train/loss"] + [f"{g}/m{i}" for g, n in MANY_GROUPS.items() for i in range(n)][1:]
    upsert_points(
        run.id, [Point(k, s, float(s + i), T0 + s) for i, k in enumerate(keys) for s in range(1, 6)]
    )
    return run


BUILT = "() => Array.from(document.querySelectorAll('.panel:not(.unbuilt)')).map((p) => p.dataset.panel)"


def test_a_many_key_runs_panels_are_built_only_near_the_screen(run_with_many_keys, start_servers, chromium):
    """200 keys: the first screen's panels are made at start, the others when scrolled to."""
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    open_run(page, base, run_with_many_keys)
    page.wait_for_timeout(300)  # the observer's first callbacks: the panels near the screen
    assert page.locator(".panel").count() == 200  # a placeholder each: the scrollbar is the whole page's
    built = page.evaluate(BUILT)
    assert "train/loss" in built and 2 <= len(built) <= 20, built
    assert not any(p.startswith("misc/") for p in built)
    assert page.locator("[data-panel='misc/m49'] .chart").count() == 0
    height = page.evaluate("() => document.documentElement.scrollHeight")

    # The last section: scrolled to, its panels are made and drawn with their own points.
    page.locator("[data-panel='misc/m49']").scroll_into_view_if_needed()
    page.wait_for_function("() => document.getElementById('chart-misc-m49')?.data?.[0]?.x?.length === 5")
    assert panel_trace(page, "chart-misc-m49")["n"] == "misc/m49"
    expect(page.get_by_label("Log scale of misc/m49")).to_have_count(1)
    assert len(page.evaluate(BUILT)) < 200  # the sections between were scrolled past, not all made
    # Placeholders are a built panel's height: building them does not move the page.
    assert abs(page.evaluate("() => document.documentElement.scrollHeight") - height) < 40
    page.screenshot(path="/tmp/runwright-runpage2-many-bottom.png")
    assert js_errors == []
