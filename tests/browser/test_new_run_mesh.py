"""In Chromium: the new-run form's mesh and memory per GPU follow the parallel fields as they are edited."""

from __future__ import annotations

from browser_support import PASSWORD
from playwright.sync_api import expect


def test_new_run_form_shows_the_mesh_and_memory_per_gpu(alice_project, start_servers, chromium):
    base = start_servers()
    page, js_errors = chromium
    page.goto(base + "/")
    page.fill("#id_username", "alice")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("#id_username")).to_have_count(0)
    page.goto(f"{base}/projects/{alice_project.id}/runs/new")
    mesh, memory = page.locator("[data-est=mesh]"), page.locator("[data-est=memory_per_gpu]")
    expect(mesh).to_have_text("2 DP (DDP)")
    expect(page.locator("[data-est=memory_activations]")).to_contain_text("with checkpointing")
    ddp_memory = memory.inner_text()

    page.fill("[name='parallel.tensor_parallel']", "2")
    expect(mesh).to_have_text("1 DP × 2 TP + SP")
    expect(memory).not_to_have_text(ddp_memory)  # weights and activations split over 2

    page.fill("[name='parallel.tensor_parallel']", "3")
    error = page.locator("[data-field='parallel.tensor_parallel'] .field-error")
    expect(error).to_contain_text("must divide parallel.num_processes (2)")
    expect(mesh).to_have_text("–")

    page.fill("[name='parallel.num_processes']", "4")
    page.fill("[name='parallel.tensor_parallel']", "2")
    page.select_option("[name='parallel.strategy']", "fsdp")
    expect(mesh).to_have_text("2 DP (FSDP) × 2 TP + SP")
    expect(error).to_be_hidden()
    page.locator("#estimate").scroll_into_view_if_needed()
    page.screenshot(path="/tmp/runwright-new-run-mesh.png")
    assert js_errors == []
