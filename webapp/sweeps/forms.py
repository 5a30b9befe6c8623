"""The new-sweep form on a project's sweeps page: the same spec the API takes, as form fields."""

from __future__ import annotations

import json
from typing import Any

from django import forms

from modelcore.config import PRESETS
from webapp.input_errors import FormInputErrors
from webapp.runs.forms import DEFAULT_PRESET
from webapp.sweeps.search import GOALS, METHODS

EXAMPLE = '{"optim.lr": {"min": 0.0001, "max": 0.01, "scale": "log"}, "model.n_layers": {"values": [2, 4]}}'


def _json_object(text: str, field: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise forms.ValidationError(
            f"not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    if not isinstance(value, dict):
        raise forms.ValidationError(f"{field} must be a JSON object")
    return value


class SweepForm(FormInputErrors, forms.Form):
    name = forms.CharField(max_length=200, required=False)
    preset = forms.ChoiceField(
        choices=[("", "(defaults)")] + [(p, p) for p in PRESETS], required=False, initial=DEFAULT_PRESET
    )
    config = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 3}),
        required=False,
        label="Base config (JSON, laid over the preset)",
        help_text='e.g. {"train": {"max_steps": 200}}',
    )
    method = forms.ChoiceField(choices=[(m, m) for m in METHODS], initial="random")
    parameters = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 4}),
        label="Search (JSON: field path → values or a range)",
        help_text=f"e.g. {EXAMPLE}. Ranges are for random search; scale log samples log-uniformly.",
    )
    budget = forms.IntegerField(
        min_value=1, max_value=10_000, required=False, help_text="Runs in all (grid: all points)"
    )
    concurrency = forms.IntegerField(min_value=1, max_value=64, initial=2, help_text="Runs at once")
    seed = forms.IntegerField(min_value=0, max_value=2**32 - 1, initial=0)
    metric = forms.CharField(max_length=200, initial="val/loss")
    goal = forms.ChoiceField(choices=[(g, g) for g in GOALS], initial="min")
    halving_step = forms.IntegerField(
        min_value=1,
        max_value=10**9,
        required=False,
        help_text="Successive halving: compare runs at this step",
    )
    halving_eta = forms.IntegerField(
        min_value=2, max_value=100, required=False, help_text="Keep the top 1/eta"
    )

    def clean_config(self) -> dict[str, Any]:
        return _json_object(self.cleaned_data["config"], "config")

    def clean_parameters(self) -> dict[str, Any]:
        return _json_object(self.cleaned_data["parameters"], "parameters")

    def spec(self) -> dict[str, Any]:
        return {k: v for k, v in self.cleaned_data.items() if v is not None and v != ""}

    def add_input_errors(self, exc: Any) -> None:
        # ``parameters.optim.lr`` and ``config.model.d_model`` go on their text box, key and all.
        for key, message in exc.errors.items():
            name = key.split(".")[0]
            if name in self.fields:
                self.add_error(name, message if name == key else f"{key}: {message}")
            else:
                self.add_error(None, f"{key}: {message}")
