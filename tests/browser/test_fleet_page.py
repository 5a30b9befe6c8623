"""The Fleet page in a browser: hosts and GPUs listed, one utilisation chart per host drawn, and the
page following its stream as hosts beat (new samples, a lease moved) and register."""

from __future__ import annotations

import datetime as dt

from browser_support import log_in
from django.utils import timezone

from modelcore.config import resolve
from webapp.fleet import services
from webapp.fleet.models import HostSample
from webapp.fleet.services import GpuInfo
from webapp.runs.models import Run
from workers import scheduler


def test_fleet_page_lists_hosts_and_draws_utilisation(alice_project, start_servers, chromium, monkeypatch):
    # Playwright's sync API runs an event loop in this thread; the writes below are plain sync code.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    gpus = [GpuInfo(str(i), "NVIDIA H100 80GB HBM3", 81559) for i in range(2)]
    big = services.register_host(name="gpu-a@rack1", queue="host.gpu-a", gpus=gpus)
    services.register_host(name="cpu-b@rack1", queue="host.cpu-b", cpu_slots=8)
    config = resolve("tiny-cpu").to_dict()
    config["parallel"].update(num_processes=1, device="auto")
    run = Run.objects.create(project=alice_project, name="placed run", preset="tiny-cpu", config=config)
    config["parallel"]["num_processes"] = 16
    Run.objects.create(project=alice_project, name="waiting run", preset="tiny-cpu", config=config)
    scheduler.schedule()
    services.beat_host(big.name, None, {"0": run.pk, "1": None})
    now = timezone.now()
    HostSample.objects.bulk_create(
        HostSample(
            host=big, time=now - dt.timedelta(minutes=i), values={"util": [0.5 + 0.4 * (i % 7) / 7, 0.1]}
        )
        for i in range(120)
    )
    base = start_servers()
    page, js_errors = chromium
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    log_in(page, base)
    page.goto(f"{base}/fleet/")
    page.wait_for_function("() => document.querySelectorAll('#fleet-charts .js-plotly-plot').length === 1")
    traces = page.evaluate(
        "() => document.querySelector('#fleet-charts .js-plotly-plot').data.map(t => t.name)"
    )
    assert traces == ["gpu0 util", "gpu1 util"]
    assert page.locator("[data-host='gpu-a@rack1'] [data-gpu='0'] a").inner_text() == "placed run"
    assert "needs 16 × GPU: no alive host has that many" in page.locator("#fleet-queue").inner_text()
    page.screenshot(path="/tmp/runwright-fleetui-fleet.png", full_page=True)

    # A beat with a new sample and the lease moved to GPU 1, then a new host: the page follows.
    points = page.evaluate("() => document.querySelector('#fleet-charts .js-plotly-plot').data[0].x.length")
    services.beat_host(big.name, {"util": [0.05, 0.99]}, {"0": None, "1": run.pk})
    services.register_host(name="gpu-c@rack2", queue="host.gpu-c", gpus=gpus[:1])
    page.wait_for_selector("[data-host='gpu-a@rack1'] [data-gpu='1'] a", timeout=15_000)
    page.wait_for_selector("#fleet-hosts [data-host='gpu-c@rack2']", timeout=15_000)
    assert page.locator("[data-host='gpu-a@rack1'] [data-gpu='0']").inner_text().endswith("free")
    page.wait_for_function(
        f"() => document.querySelector('#fleet-charts .js-plotly-plot').data[0].x.length > {points}",
        timeout=15_000,
    )
    assert any(url.endswith("/fleet/stream?hours=6") for url in asked)
    assert not any("/fleet/data" in url for url in asked)  # followed, not polled
    page.screenshot(path="/tmp/runwright-fleetui-fleet-live.png", full_page=True)
    assert js_errors == []


def test_fleet_page_names_the_node_of_a_multi_node_run_on_each_host(
    alice_project, start_servers, chromium, monkeypatch
):
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    gpu = [GpuInfo("0", "NVIDIA H100 80GB HBM3", 81559)]
    for name in ("gpu-a@rack1", "gpu-b@rack2"):
        services.register_host(name=name, queue=f"host.{name}", gpus=gpu)
    config = resolve("tiny-cpu").to_dict()
    config["parallel"].update(num_processes=2, device="auto")
    config["launcher"]["nodes"] = 2
    run = Run.objects.create(project=alice_project, name="two-node run", preset="tiny-cpu", config=config)
    assert [run_id for run_id, _ in scheduler.schedule().placed] == [run.pk]
    services.beat_host("gpu-a@rack1", None, {"0": run.pk})
    services.beat_host("gpu-b@rack2", None, {"0": run.pk})
    base = start_servers()
    page, js_errors = chromium
    log_in(page, base)
    for width in (1400, 1000):
        page.set_viewport_size({"width": width, "height": 600})
        page.goto(f"{base}/fleet/")
        for host, node in (("gpu-a@rack1", "node 0 of 2"), ("gpu-b@rack2", "node 1 of 2")):
            row = page.locator(f"#fleet-hosts [data-host='{host}']")
            label = row.locator(f".fleet-placed[data-run='{run.pk}'] .fleet-node")
            assert label.inner_text() == node
            assert row.locator("[data-gpu='0'] .fleet-node").inner_text() == node
            # On the run's line, inside the table (not pushed past its edge at 1000 px).
            right = page.evaluate(
                "([host, run]) => { const t = document.querySelector('#fleet-hosts table').getBoundingClientRect();"
                " const l = document.querySelector(`[data-host='${host}'] .fleet-placed[data-run='${run}'] .fleet-node`)"
                ".getBoundingClientRect(); return [l.right, t.right, l.width]; }",
                [host, run.pk],
            )
            assert right[2] > 0 and right[0] <= right[1] + 1, (width, right)
        page.screenshot(path=f"/tmp/runwright-fleet-nodes-{width}.png", full_page=True)
    assert js_errors == []
