"""The new-run form is generated from the config schema and shows errors next to their fields."""

from __future__ import annotations

import re

from modelcore.config import PRESETS, field_schema
from webapp.runs.forms import RunForm, initial_for
from webapp.runs.models import Run, RunStatus


def form_data(**changes) -> dict:
    """A POST body as the browser sends it: the tiny-cpu preset, unchecked boxes left out."""
    data = {k: v for k, v in initial_for("tiny-cpu").items() if v is not False}
    data.update({k: str(v).lower() if isinstance(v, bool) else v for k, v in changes.items()})
    data["name"] = data.get("name", "form run")
    return data


def test_form_has_a_field_per_schema_field_with_the_schema_widget():
    form = RunForm(initial=initial_for("tiny-cpu"))
    for section in field_schema():
        for meta in section["fields"]:
            assert meta["path"] in form.fields
    html = form.as_p()
    assert 'name="model.kernels"' in html and "<select" in html  # choices become selects
    assert 'type="checkbox" name="model.tie_embeddings"' in html  # bools become checkboxes


def test_new_run_page_renders_sections_defaults_help_and_presets(client_for, alice, project):
    response = client_for(alice).get(f"/projects/{project.id}/runs/new")
    assert response.status_code == 200
    html = response.content.decode()
    for title in (
        "Model",
        "Data",
        "Optimizer",
        "Parallelism",
        "Training",
        "Evaluation",
        "Resources",
        "Cluster launcher (Slurm)",
    ):
        assert f"<legend>{title}</legend>" in html
    # tiny-cpu is the default preset: its d_model (64) is filled in, not the schema default (128).
    assert re.search(r'name="model\.d_model"[^>]*value="64"', html)
    assert "Attention (query) heads; must divide d_model." in html
    assert html.count('<details class="advanced"') >= 3  # advanced fields start collapsed
    for name in PRESETS:
        assert f'<option value="{name}"' in html
    assert 'id="presets-data"' in html
    # The estimate for tiny-cpu is computed server-side.
    assert 'data-est="num_params">' in html and 'data-est="num_params">–' not in html


def test_preset_query_parameter_fills_the_form(client_for, alice, project):
    html = client_for(alice).get(f"/projects/{project.id}/runs/new?preset=gpt2-small").content.decode()
    assert re.search(r'name="model\.d_model"[^>]*value="768"', html)


def test_relation_error_is_shown_next_to_its_field_and_values_are_kept(client_for, alice, project):
    data = form_data(**{"model.n_heads": "5", "model.n_kv_heads": "0", "train.max_steps": "77"})
    response = client_for(alice).post(f"/projects/{project.id}/runs/new", data)
    assert response.status_code == 400
    html = response.content.decode()
    field = re.search(
        r'<div class="field has-error[^"]*" data-field="model\.n_heads">(.*?)</div>', html, re.S
    )
    assert field, "the n_heads field is not marked as having an error"
    assert "must divide model.d_model (64)" in field.group(1)
    assert re.search(r'name="model\.n_heads"[^>]*value="5"', html)
    assert re.search(r'name="train\.max_steps"[^>]*value="77"', html)
    assert not Run.objects.exists()


def test_type_and_range_errors_use_the_schema_messages(client_for, alice, project):
    data = form_data(**{"model.n_layers": "two", "optim.lr": "-1"})
    html = client_for(alice).post(f"/projects/{project.id}/runs/new", data).content.decode()
    assert re.search(r'data-error-for="model\.n_layers">must be a whole number', html)
    # A type error stops before the schema runs; fix it and the range error appears.
    data["model.n_layers"] = "2"
    html = client_for(alice).post(f"/projects/{project.id}/runs/new", data).content.decode()
    assert re.search(r'data-error-for="optim\.lr">must be at least 0 \(got -1\)', html)


def test_valid_form_creates_a_queued_run_and_enqueues_it(
    client_for, alice, project, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = client_for(alice).post(
            f"/projects/{project.id}/runs/new", form_data(**{"train.max_steps": "30"})
        )
    run = Run.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/runs/{run.id}/"
    assert run.status == RunStatus.QUEUED and run.preset == "tiny-cpu" and run.created_by == alice
    assert run.config["train"]["max_steps"] == 30
    assert run.config["model"]["d_model"] == 64 and run.config["model"]["tie_embeddings"] is True
    assert len(callbacks) == 1


def test_unchecked_checkbox_is_false(client_for, alice, project, django_capture_on_commit_callbacks):
    data = form_data()
    data.pop("model.tie_embeddings")
    with django_capture_on_commit_callbacks():
        client_for(alice).post(f"/projects/{project.id}/runs/new", data)
    assert Run.objects.get().config["model"]["tie_embeddings"] is False


def test_estimate_endpoint_works_with_the_session(client_for, alice):
    client = client_for(alice)
    ok = client.post("/api/v1/config/estimate", {"preset": "tiny-cpu"}, content_type="application/json")
    assert ok.status_code == 200
    from modelcore.config import resolve

    assert ok.json()["num_params"] == resolve("tiny-cpu").model.num_params()
    bad = client.post(
        "/api/v1/config/estimate",
        {"preset": "tiny-cpu", "config": {"model": {"n_heads": 5, "n_kv_heads": 0}}},
        content_type="application/json",
    )
    assert bad.status_code == 400 and bad.json()["errors"] == {
        "model.n_heads": "must divide model.d_model (64)"
    }
