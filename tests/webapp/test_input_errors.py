"""One input error type, answered once per surface: the API, the pages' JSON endpoints, forms, and 400 pages."""

from __future__ import annotations

import pytest
from django import forms
from django.urls import path

from modelcore.config import ConfigError
from webapp.evals.forms import RunEvalForm
from webapp.input_errors import FormInputErrors, InputError

# --- JSON: {"error": summary, "errors": {field: message}} with 400 -----------------------


def test_a_service_error_over_the_api_names_its_field(api, alice):
    response = api(alice, "POST", "/api/v1/projects", {"name": "  "})
    assert response.status_code == 400
    assert response.json() == {"error": "name: must not be empty", "errors": {"name": "must not be empty"}}


def test_a_config_error_over_the_api_has_the_same_shape(api, alice, project):
    response = api(
        alice, "POST", f"/api/v1/projects/{project.id}/runs", {"config": {"model": {"n_layers": 0}}}
    )
    assert response.status_code == 400
    body = response.json()
    assert body["errors"]["model.n_layers"].startswith("must be at least 1")
    assert body["error"].startswith("model.n_layers: must be at least 1")


def test_a_bad_body_names_the_body_with_its_own_message(api, alice):
    response = api(alice, "POST", "/api/v1/projects", raw=b"{not json")
    assert response.status_code == 400
    body = response.json()
    assert body["error"].startswith("malformed JSON") and body["errors"] == {"body": body["error"]}


def test_a_pages_json_endpoint_answers_like_the_api(client_for, alice, project):
    response = client_for(alice).get(
        f"/projects/{project.id}/compare/series", {"run": ["x", "1"], "key": "k"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error", "errors"} and "run" in response.json()["errors"]


def _unexpected(request):
    raise InputError({"since": "must be a whole number"})


# This module is the URLconf of the test below: a view that lets an InputError escape.
urlpatterns = [path("page/", _unexpected), path("api/v1/thing", _unexpected)]
handler400 = "webapp.errors.bad_request"


@pytest.mark.urls(__name__)
def test_an_input_error_no_view_expected_is_a_400_not_a_500(client):
    page = client.get("/page/")
    assert page.status_code == 400 and b"since: must be a whole number" in page.content
    api = client.get("/api/v1/thing")
    assert api.status_code == 400
    assert api.json() == {
        "error": "since: must be a whole number",
        "errors": {"since": "must be a whole number"},
    }


# --- forms: each message next to its field ----------------------------------------------


class NameForm(FormInputErrors, forms.Form):
    name = forms.CharField()


def test_a_form_puts_service_errors_on_their_fields_and_the_rest_on_top():
    form = NameForm({"name": "x"})
    assert form.is_valid()

    def service(name: str) -> str:
        raise InputError({"name": "already taken", "team": "choose one"})

    assert form.submit(service, name="x") is None
    assert form.errors["name"] == ["already taken"]
    assert form.non_field_errors() == ["team: choose one"]


def test_a_form_takes_config_errors_too_and_passes_results_through():
    form = NameForm({"name": "x"})
    assert form.is_valid()
    assert form.submit(lambda: "created") == "created" and not form.errors

    def config_service() -> None:
        raise ConfigError({"name": "must be at most 200 characters"})

    form.submit(config_service)
    assert form.errors["name"] == ["must be at most 200 characters"]


def test_the_run_page_eval_form_shows_a_model_error_on_its_checkpoint_field():
    form = RunEvalForm({"step": "10", "tasks": []}, steps=[10], tasks=[])
    form.is_valid()
    form.add_input_errors(InputError({"models": "run 3 has no checkpoint at step 10"}))
    assert form.errors["step"] == ["run 3 has no checkpoint at step 10"]


def test_a_service_error_on_a_page_is_a_400_with_the_form_again(client_for, alice, project):
    response = client_for(alice).post("/projects/", {"name": project.name, "team": project.team_id})
    assert response.status_code == 400
    assert b"already has a project named" in response.content
