"""The new-run form, generated from ``modelcore.config.field_schema()``.

The form only checks that each value has the right type; ranges and relations
between fields are the config schema's job, so the form, the API and the CLI
show the same messages (``model.n_heads: must divide model.d_model (512)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django import forms
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser

from modelcore.config import PRESETS, field_schema, resolve
from webapp.input_errors import FormInputErrors
from webapp.runs import config_paths
from webapp.runs.config_paths import choices_for
from webapp.runs.models import Checkpoint, Run

DEFAULT_PRESET = "tiny-cpu"
SECTION_TITLES = {
    "model": "Model",
    "data": "Data",
    "optim": "Optimizer",
    "parallel": "Parallelism",
    "train": "Training",
    "eval": "Evaluation",
    "resources": "Resources",
    "launcher": "Cluster launcher (Slurm)",
}


def preset_values() -> dict[str, dict[str, dict[str, Any]]]:
    """Every preset fully resolved (``""`` is the plain defaults), for the form's preset selector."""
    resolved = {"": resolve(None).to_dict()}
    resolved.update({name: resolve(name).to_dict() for name in PRESETS})
    return resolved


def initial_for(preset: str) -> dict[str, Any]:
    values = preset_values()[preset if preset in PRESETS else ""]
    initial: dict[str, Any] = {"preset": preset if preset in PRESETS else ""}
    for section, fields in values.items():
        for name, value in fields.items():
            initial[f"{section}.{name}"] = format_value(value)
    return initial


def initial_from_run(run: Run) -> dict[str, Any]:
    """The form filled with a run's stored config ("New run from this one").

    A path field that names a run is stored as that run's real folder; the form takes it
    back as the reference a person would type (``run:<id>`` or ``run:<id>:<step>``), since
    the web accepts runs only by reference.
    """
    initial: dict[str, Any] = {"preset": run.preset if run.preset in PRESETS else ""}
    config = resolve(None).to_dict()
    for section, fields in (run.config or {}).items():
        if isinstance(fields, dict) and section in config:
            config[section].update({k: v for k, v in fields.items() if k in config[section]})
    for field in config_paths.path_fields():
        section, name = field.path.split(".")
        if "run" in field.spec.sources and config[section][name]:
            config[section][name] = _run_reference(str(config[section][name]))
    for section, fields in config.items():
        for name, value in fields.items():
            initial[f"{section}.{name}"] = format_value(value)
    return initial


def _run_reference(value: str) -> str:
    root = config_paths.runs_root()
    path = Path(value)
    if not path.is_absolute() or not config_paths.inside(root, path):
        return value
    parts = path.relative_to(root).parts
    if len(parts) == 1 and parts[0].isdigit():
        return f"run:{parts[0]}"
    if len(parts) == 3 and parts[0].isdigit():  # a checkpoint folder: its row says which step
        step = Checkpoint.objects.filter(run_id=int(parts[0]), path="/".join(parts[1:])).values_list(
            "step", flat=True
        )
        if step:
            return f"run:{parts[0]}:{step[0]}"
    return value


def format_value(value: Any) -> Any:
    # repr keeps floats exact and short (3e-05, 500000.0) where str() formatting could round.
    return repr(value) if isinstance(value, float) else value


class RunForm(FormInputErrors, forms.Form):
    name = forms.CharField(
        max_length=200, required=False, help_text="Optional; defaults to the preset name and a number."
    )
    preset = forms.ChoiceField(
        required=False,
        choices=[("", "none (defaults)")] + [(p, p) for p in PRESETS],
        help_text="Fills every field below; change any of them afterwards.",
    )

    def __init__(self, *args: Any, user: AbstractBaseUser | AnonymousUser | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._schema = field_schema()
        # Path fields offer what this user may name (datasets, model folders, runs); typing is still allowed.
        self._path_choices: dict[str, list[tuple[str, str]]] = {}
        for section in self._schema:
            for meta in section["fields"]:
                field = self.fields[meta["path"]] = _config_field(meta)
                if meta["path_spec"] is not None and user is not None and user.is_authenticated:
                    self._path_choices[meta["path"]] = choices_for(meta["path_spec"], user)
                    field.widget.attrs["list"] = f"choices-{meta['path']}"

    def config_overrides(self) -> dict[str, dict[str, Any]]:
        """The cleaned values as a ``{section: {field: value}}`` dict (call after is_valid)."""
        overrides: dict[str, dict[str, Any]] = {}
        for section in self._schema:
            for meta in section["fields"]:
                overrides.setdefault(section["name"], {})[meta["name"]] = self.cleaned_data[meta["path"]]
        return overrides

    def sections(self) -> list[dict[str, Any]]:
        """Bound fields grouped by section, split into everyday and advanced ones, for the template."""
        out = []
        for section in self._schema:
            basic, advanced = [], []
            for meta in section["fields"]:
                bound = self[meta["path"]]
                item = {"field": bound, "meta": meta, "choices": self._path_choices.get(meta["path"])}
                (advanced if meta["advanced"] else basic).append(item)
            has_errors = any(item["field"].errors for item in basic + advanced)
            out.append(
                {
                    "name": section["name"],
                    "title": SECTION_TITLES.get(section["name"], section["title"]),
                    "basic": basic,
                    "advanced": advanced,
                    "advanced_has_errors": any(item["field"].errors for item in advanced),
                    "has_errors": has_errors,
                }
            )
        return out


def _config_field(meta: dict[str, Any]) -> forms.Field:
    attrs = {"data-path": meta["path"], "aria-describedby": f"help-{meta['path']}"}
    common = {"label": meta["name"], "help_text": meta["help"]}
    kind = meta["type"]
    if kind == "bool":
        return forms.BooleanField(required=False, widget=forms.CheckboxInput(attrs=attrs), **common)
    if meta["choices"]:
        return forms.ChoiceField(
            choices=[(c, c) for c in meta["choices"]],
            widget=forms.Select(attrs=attrs),
            error_messages={"invalid_choice": "must be one of " + ", ".join(meta["choices"])},
            **common,
        )
    required = {"required": "must not be empty"}
    if kind == "int":
        return forms.IntegerField(
            widget=forms.NumberInput(attrs={**attrs, "step": "1"}),
            error_messages={**required, "invalid": "must be a whole number"},
            **common,
        )
    if kind == "float":
        return forms.FloatField(
            widget=forms.TextInput(attrs={**attrs, "inputmode": "decimal", "class": "num"}),
            error_messages={**required, "invalid": "must be a number"},
            **common,
        )
    return forms.CharField(required=False, strip=True, widget=forms.TextInput(attrs=attrs), **common)
