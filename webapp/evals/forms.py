"""Forms for eval jobs, task uploads, result imports and reports; choices come from the selectors."""

from __future__ import annotations

from django import forms

from webapp.evals.models import EvalJob
from webapp.evals.services import EvalError, ModelRef
from webapp.evals.sources import TaskInfo, hf_model_dirs
from webapp.evals.taskupload import max_upload_bytes
from webapp.runs.models import Checkpoint

MAX_IMPORT_BYTES = 50 * 1024 * 1024


class ErrorsFromService:
    """Put a service's ``EvalError`` on the matching fields (unknown keys go to the form)."""

    def add_service_errors(self, exc: EvalError) -> None:
        for name, message in exc.errors.items():
            self.add_error(name if name in self.fields else None, message)


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


class EvalJobForm(ErrorsFromService, forms.Form):
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


class RunEvalForm(ErrorsFromService, forms.Form):
    """ "Evaluate checkpoint N on tasks ..." from the run page."""

    step = forms.TypedChoiceField(coerce=int, label="Checkpoint")
    tasks = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple)
    num_fewshot = forms.IntegerField(required=False, min_value=0, max_value=64, label="Few-shot examples")
    limit = forms.IntegerField(required=False, min_value=1, label="Samples per task")

    def __init__(self, *args, steps: list[int], tasks: list[TaskInfo], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["step"].choices = [(s, f"step {s}") for s in steps]
        self.fields["tasks"].choices = [(t.name, t.name) for t in tasks]


class TaskUploadForm(forms.Form):
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


class ImportResultsForm(ErrorsFromService, forms.Form):
    results_file = forms.FileField(label="Results JSON", help_text="lm-eval's results_<date>.json, or ours.")
    sample_files = forms.FileField(
        required=False,
        label="Sample files (optional)",
        help_text="lm-eval's samples_<task>_<date>.jsonl (from --log_samples), for paired tests.",
        widget=MultipleFileInput(),
    )
    label = forms.CharField(required=False, max_length=200, help_text="Model name shown in reports.")

    def clean_results_file(self):
        upload = self.cleaned_data["results_file"]
        if upload.size > MAX_IMPORT_BYTES:
            raise forms.ValidationError(f"The file is larger than {MAX_IMPORT_BYTES // (1024 * 1024)} MB.")
        return upload


class ReportForm(ErrorsFromService, forms.Form):
    name = forms.CharField(max_length=200)
    jobs = forms.MultipleChoiceField(widget=forms.CheckboxSelectMultiple, label="Eval jobs")

    def __init__(self, *args, jobs: list[EvalJob], **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["jobs"].choices = [
            (str(j.id), f"#{j.id} {j.model_label} — {', '.join(j.tasks)} ({j.status})") for j in jobs
        ]
