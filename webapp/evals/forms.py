"""Forms for eval jobs, task uploads, result imports and reports; choices come from the selectors."""

from __future__ import annotations

from typing import Any

from django import forms

from webapp.evals.models import EvalJob
from webapp.evals.services import ModelRef
from webapp.evals.sources import TaskInfo, hf_model_dirs
from webapp.evals.taskupload import max_upload_bytes
from webapp.input_errors import FormInputErrors
from webapp.runs.models import Checkpoint

MAX_IMPORT_BYTES = 50 * 1024 * 1024
MAX_SAMPLE_FILES = 50


def model_choices(checkpoints: list[Checkpoint]) -> list[tuple[str, list[tuple[str, str]]]]:
    groups: dict[str, list[tuple[str, str]]] = {}
    for ckpt in checkpoints:
        ref = ModelRef("checkpoint", run_id=ckpt.run_id, step=ckpt.step)
        groups.setdefault(f"Run {ckpt.run_id}: {ckpt.run.name}", []).append(
            (ref.value(), f"step {ckpt.step}")
        )
    hf = [(ModelRef("hf", hf_path=p).value(), p) for p in hf_model_dirs()]
    choices = list(groups.items())
    if hf:
        choices.append(("Hugging Face models", hf))
    return choices


class EvalJobForm(FormInputErrors, forms.Form):
    models = forms.MultipleChoiceField(
        help_text="Checkpoints of this project's runs and Hugging Face folders in the shared models folder.",
        widget=forms.SelectMultiple(attrs={"size": 8}),
    )
    tasks = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    num_fewshot = forms.IntegerField(
        required=False,
        min_value=0,
        max_value=64,
        label="Few-shot examples",
        help_text="Empty: each task's own num_fewshot.",
    )
    limit = forms.IntegerField(
        required=False, min_value=1, label="Samples per task", help_text="Empty: every sample of each task."
    )
    report_name = forms.CharField(
        required=False,
        max_length=200,
        label="Report name",
        help_text="Optional: also save a comparison report over these jobs.",
    )

    def __init__(self, *args, checkpoints: list[Checkpoint], tasks: list[TaskInfo], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["models"].choices = model_choices(checkpoints)
        self.fields["tasks"].choices = [(t.name, f"{t.name} ({t.origin})") for t in tasks]

    def model_refs(self) -> list[ModelRef]:
        return [ModelRef.parse(v) for v in self.cleaned_data["models"]]


class RunEvalForm(FormInputErrors, forms.Form):
    """ "Evaluate checkpoint N on tasks ..." from the run page."""

    error_fields = {"models": "step"}  # the model evaluated is this run's checkpoint

    step = forms.TypedChoiceField(coerce=int, label="Checkpoint")
    tasks = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    num_fewshot = forms.IntegerField(required=False, min_value=0, max_value=64, label="Few-shot examples")
    limit = forms.IntegerField(required=False, min_value=1, label="Samples per task")

    def __init__(self, *args, steps: list[int], tasks: list[TaskInfo], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["step"].choices = [(s, f"step {s}") for s in steps]
        self.fields["tasks"].choices = [(t.name, t.name) for t in tasks]


class TaskUploadForm(FormInputErrors, forms.Form):
    archive = forms.FileField(
        label="Task folder (.zip)",
        help_text="A zip of lm-eval task YAML files and their data files (json, jsonl, csv, parquet).",
    )

    def clean_archive(self):
        upload = self.cleaned_data["archive"]
        if upload.size > max_upload_bytes():
            raise forms.ValidationError(f"The zip is larger than {max_upload_bytes() // (1024 * 1024)} MB.")
        if not upload.name.lower().endswith(".zip"):
            raise forms.ValidationError("Upload a .zip file.")
        return upload


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """Several files under one name (a plain FileField refuses the list its widget gives)."""

    def __init__(self, **kwargs: Any):
        super().__init__(widget=MultipleFileInput(), **kwargs)

    def clean(self, data: Any, initial: Any = None) -> list[Any]:
        files = data if isinstance(data, list | tuple) else [data] if data else []
        return [super(MultipleFileField, self).clean(f, initial) for f in files]


class ImportResultsForm(FormInputErrors, forms.Form):
    results_file = forms.FileField(label="Results JSON", help_text="lm-eval's results_<date>.json, or ours.")
    sample_files = MultipleFileField(
        required=False,
        label="Sample files (optional)",
        help_text="lm-eval's samples_<task>_<date>.jsonl (from --log_samples), for paired tests.",
    )
    label = forms.CharField(required=False, max_length=200, help_text="Model name shown in reports.")

    def clean_results_file(self) -> str:
        upload = self.cleaned_data["results_file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise forms.ValidationError(f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB.")
        return _text(upload.read())

    def clean_sample_files(self) -> list[tuple[str, str]]:
        """(name, text) of each sample file."""
        files = self.cleaned_data["sample_files"]
        if len(files) > MAX_SAMPLE_FILES:
            raise forms.ValidationError(f"at most {MAX_SAMPLE_FILES} files")
        if sum(f.size for f in files) > MAX_IMPORT_BYTES:
            raise forms.ValidationError(f"together larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB")
        return [(f.name, _text(f.read())) for f in files]


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise forms.ValidationError("must be UTF-8 text") from None


class ReportForm(FormInputErrors, forms.Form):
    name = forms.CharField(max_length=200)
    jobs = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Eval jobs")

    def __init__(self, *args, jobs: list[EvalJob], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["jobs"].choices = [
            (str(j.id), f"#{j.id} {j.model_label} — {', '.join(j.tasks)} ({j.status})") for j in jobs
        ]

    def report_fields(self) -> dict[str, Any]:
        """``name`` and ``job_ids`` as the report services take them (call after is_valid)."""
        return {"name": self.cleaned_data["name"], "job_ids": [int(i) for i in self.cleaned_data["jobs"]]}
