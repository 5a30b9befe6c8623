"""Task definitions in lm-evaluation-harness's YAML format (the subset most tasks use).

A task folder holds ``*.yaml`` files, each with a ``task:`` name; ``include:``
lays a task over a base file like lm-eval does. Every mistake raises
``TaskConfigError`` naming the file and the YAML key, so a user who dropped a
folder in the tasks directory sees what to fix.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

OUTPUT_TYPES = ("multiple_choice", "loglikelihood", "loglikelihood_rolling", "generate_until")

# What lm-eval computes when a task leaves out metric_list.
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "multiple_choice": ("acc", "acc_norm"),
    "generate_until": ("exact_match",),
}
METRICS_BY_TYPE: dict[str, tuple[str, ...]] = {
    "loglikelihood": ("perplexity", "acc"),
    "loglikelihood_rolling": ("word_perplexity", "byte_perplexity", "bits_per_byte"),
    "multiple_choice": ("acc", "acc_norm", "exact_match"),
    "generate_until": ("exact_match",),
}
EXACT_MATCH_OPTIONS = ("ignore_case", "ignore_punctuation", "ignore_numbers", "regexes_to_ignore")

# Keys lm-eval knows that change results in ways this evaluator does not implement:
# refusing them is better than silently computing a different number.
UNSUPPORTED_KEYS = {
    "process_docs": "Python hooks (!function) are not run; preprocess the data files instead",
    "process_results": "Python hooks (!function) are not run",
    "filter_list": "answer-extraction filters are not supported; only the raw generation is scored",
    "use_prompt": "promptsource prompts are not supported; write doc_to_text/doc_to_target",
    "doc_to_image": "multimodal tasks are not supported",
    "doc_to_audio": "multimodal tasks are not supported",
    "custom_dataset": "Python dataset hooks are not supported",
    "gen_prefix": "gen_prefix is not supported",
    "unsafe_code": "tasks that execute code are not supported",
    "group": "groups are not supported; list the tasks with --tasks a,b",
}
# Keys accepted and ignored: they do not change any score.
IGNORED_KEYS = {"tag", "task_alias", "should_decontaminate", "doc_to_decontamination_query", "dataset_name"}
FEWSHOT_KEYS = {
    "sampler",
    "split",
    "doc_to_text",
    "doc_to_target",
    "doc_to_choice",
    "fewshot_delimiter",
    "target_delimiter",
    "samples",
}


class TaskConfigError(ValueError):
    """A task YAML that cannot be run; the message names the file and the key."""


# Every task name lm-eval ships (11,000 of them) fits this; a path never does ('/', '\\',
# '~', NUL, a leading '.'), nor does anything a shell or the --tasks list would split.
_TASK_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")
TASK_NAME_RULE = "letters, digits and _ - . + (up to 200, not starting with '.' and without '..')"


def is_task_name(name: object) -> bool:
    """Whether ``name`` is a task name (looked up in the registry) rather than something path-like."""
    return isinstance(name, str) and _TASK_NAME.fullmatch(name) is not None and ".." not in name


def check_task_name(name: object, key: str = "task") -> str:
    """``name`` when it is a task name; otherwise a TaskConfigError that starts with ``key``."""
    if not is_task_name(name):
        shown = repr(name) if len(repr(name)) <= 80 else repr(name)[:77] + "..."
        raise TaskConfigError(f"{key}: {shown} is not a task name; a task name has {TASK_NAME_RULE}")
    return name


class _Function:
    """Stands for a ``!function module.name`` value, which this evaluator never executes."""

    def __init__(self, ref: str):
        self.ref = ref


class _TaskLoader(yaml.SafeLoader):
    pass


_TaskLoader.add_constructor("!function", lambda loader, node: _Function(loader.construct_scalar(node)))


@dataclass(frozen=True)
class FewshotConfig:
    sampler: str = "default"
    split: str | None = None
    samples: list[dict[str, Any]] | None = None
    doc_to_text: Any = None
    doc_to_target: Any = None
    doc_to_choice: Any = None
    fewshot_delimiter: str = "\n\n"
    target_delimiter: str = " "


@dataclass(frozen=True)
class MetricSpec:
    name: str
    aggregation: str | None = None
    higher_is_better: bool | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TaskConfig:
    """One task, as lm-eval's ``TaskConfig`` would hold it after loading the YAML."""

    task: str
    dataset_path: str
    output_type: str
    source: str = ""
    dataset_kwargs: dict[str, Any] = field(default_factory=dict)
    training_split: str | None = None
    validation_split: str | None = None
    test_split: str | None = None
    fewshot_split: str | None = None
    doc_to_text: Any = None
    doc_to_target: Any = None
    doc_to_choice: Any = None
    description: str = ""
    target_delimiter: str = " "
    fewshot_delimiter: str = "\n\n"
    fewshot_config: FewshotConfig = field(default_factory=FewshotConfig)
    num_fewshot: int | None = None
    metric_list: tuple[MetricSpec, ...] = ()
    generation_kwargs: dict[str, Any] | None = None
    repeats: int = 1
    metadata: dict[str, Any] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def version(self) -> Any:
        """lm-eval reports ``metadata.version`` and ``"Yaml"`` for tasks without one."""
        return self.metadata.get("version", "Yaml")

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()

    def with_num_fewshot(self, n: int | None) -> TaskConfig:
        return self if n is None else dataclasses.replace(self, num_fewshot=n)

    def dump(self) -> dict[str, Any]:
        """The config as lm-eval's results JSON shows it under ``configs``: set keys only."""
        out = {k: v for k, v in self.raw.items() if k != "include" and not isinstance(v, _Function)}
        out["task"] = self.task
        out["output_type"] = self.output_type
        out["target_delimiter"] = self.target_delimiter
        out["fewshot_delimiter"] = self.fewshot_delimiter
        out["num_fewshot"] = self.num_fewshot if self.num_fewshot is not None else 0
        out["metric_list"] = [
            {
                "metric": m.name,
                "aggregation": m.aggregation,
                "higher_is_better": m.higher_is_better,
                **m.options,
            }
            for m in self.metric_list
        ]
        if self.generation_kwargs is not None:
            out["generation_kwargs"] = self.generation_kwargs
        out["repeats"] = self.repeats
        out["metadata"] = {"version": self.version, **self.metadata}
        return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise TaskConfigError(f"{path}: include: loops back to itself")
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)  # noqa: S506 - safe subclass
    except yaml.YAMLError as exc:
        raise TaskConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise TaskConfigError(f"{path}: cannot read: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise TaskConfigError(f"{path}: must be a mapping of keys (task:, dataset_path:, ...)")
    include = data.pop("include", None)
    if include is not None:
        if not isinstance(include, str):
            raise TaskConfigError(f"{path}: include: must be a file name")
        base = _read_yaml((path.parent / include).resolve(), (*seen, path))
        base.update(data)
        data = base
    return data


def _opt_str(path: Path, data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and not isinstance(value, str):
        raise TaskConfigError(f"{path}: {key}: must be a string, got {type(value).__name__}")
    return value


def _template(path: Path, data: dict[str, Any], key: str, allow_list: bool = False) -> Any:
    value = data.get(key)
    if isinstance(value, _Function):
        raise TaskConfigError(f"{path}: {key}: !function {value.ref} is not supported; use a Jinja template")
    if value is None or isinstance(value, str | int):
        return value
    if allow_list and isinstance(value, list | dict):
        return value
    raise TaskConfigError(f"{path}: {key}: must be a field name or a Jinja template string")


def _metrics(path: Path, data: dict[str, Any], output_type: str) -> tuple[MetricSpec, ...]:
    raw = data.get("metric_list")
    if raw is None:
        return tuple(MetricSpec(name) for name in DEFAULT_METRICS[output_type])
    if not isinstance(raw, list) or not raw:
        raise TaskConfigError(f"{path}: metric_list: must be a non-empty list of {{metric: NAME}} entries")
    allowed = METRICS_BY_TYPE[output_type]
    specs = []
    for i, entry in enumerate(raw):
        where = f"{path}: metric_list[{i}]"
        if not isinstance(entry, dict) or "metric" not in entry:
            raise TaskConfigError(f"{where}: each entry needs a 'metric' key")
        name = entry["metric"]
        if isinstance(name, _Function) or not isinstance(name, str):
            raise TaskConfigError(f"{where}.metric: must be a metric name")
        if name not in allowed:
            raise TaskConfigError(
                f"{where}.metric: {name!r} is not supported for output_type {output_type} "
                f"(supported: {', '.join(allowed)})"
            )
        options = {k: v for k, v in entry.items() if k not in ("metric", "aggregation", "higher_is_better")}
        options.pop("hf_evaluate", None)
        unknown = set(options) - (set(EXACT_MATCH_OPTIONS) if name == "exact_match" else set())
        if unknown:
            raise TaskConfigError(f"{where}.{sorted(unknown)[0]}: unknown option for metric {name}")
        agg = entry.get("aggregation")
        if agg is not None and not isinstance(agg, str):
            raise TaskConfigError(f"{where}.aggregation: must be a name such as mean")
        specs.append(MetricSpec(name, agg, entry.get("higher_is_better"), options))
    return tuple(specs)


def _fewshot(path: Path, data: dict[str, Any], parent: dict[str, Any]) -> FewshotConfig:
    raw = data.get("fewshot_config") or {}
    if not isinstance(raw, dict):
        raise TaskConfigError(f"{path}: fewshot_config: must be a mapping")
    unknown = set(raw) - FEWSHOT_KEYS
    if unknown:
        raise TaskConfigError(f"{path}: fewshot_config.{sorted(unknown)[0]}: not supported")
    sampler = raw.get("sampler", "default")
    if sampler not in ("default", "first_n"):
        raise TaskConfigError(f"{path}: fewshot_config.sampler: must be 'default' or 'first_n'")
    samples = raw.get("samples")
    if samples is not None and not (isinstance(samples, list) and all(isinstance(s, dict) for s in samples)):
        raise TaskConfigError(f"{path}: fewshot_config.samples: must be a list of documents")
    # Unset fewshot fields inherit the task's, as in lm-eval's FewshotConfig.from_dict.
    merged = {**parent, **{k: v for k, v in raw.items() if k != "split"}}
    return FewshotConfig(
        sampler=sampler,
        split=raw.get("split", parent["split"]),
        samples=samples,
        doc_to_text=_template(path, merged, "doc_to_text"),
        doc_to_target=_template(path, merged, "doc_to_target", allow_list=True),
        doc_to_choice=_template(path, merged, "doc_to_choice", allow_list=True),
        fewshot_delimiter=merged["fewshot_delimiter"],
        target_delimiter=merged["target_delimiter"],
    )


def _generation_kwargs(path: Path, data: dict[str, Any], fewshot_delimiter: str) -> dict[str, Any]:
    raw = data.get("generation_kwargs")
    if raw is None:
        return {"until": [fewshot_delimiter], "do_sample": False, "temperature": 0.0, "max_gen_toks": 256}
    if not isinstance(raw, dict):
        raise TaskConfigError(f"{path}: generation_kwargs: must be a mapping")
    gen = dict(raw)
    if gen.get("do_sample"):
        raise TaskConfigError(
            f"{path}: generation_kwargs.do_sample: only greedy decoding (false) is supported"
        )
    if float(gen.get("temperature", 0.0)) != 0.0:
        raise TaskConfigError(f"{path}: generation_kwargs.temperature: only 0 (greedy) is supported")
    until = gen.get("until", [fewshot_delimiter])
    if isinstance(until, str):
        until = [until]
    if not isinstance(until, list) or not all(isinstance(u, str) for u in until):
        raise TaskConfigError(f"{path}: generation_kwargs.until: must be a string or a list of strings")
    gen["until"] = until
    for alias in ("max_gen_toks", "max_new_tokens", "max_tokens"):
        if alias in gen:
            value = gen.pop(alias)
            if not isinstance(value, int) or value < 1:
                raise TaskConfigError(f"{path}: generation_kwargs.{alias}: must be a positive integer")
            gen.setdefault("max_gen_toks", value)
    gen.setdefault("max_gen_toks", 256)
    extra = set(gen) - {"until", "max_gen_toks", "do_sample", "temperature"}
    if extra:
        raise TaskConfigError(
            f"{path}: generation_kwargs.{sorted(extra)[0]}: not supported (greedy decoding only)"
        )
    return gen


def parse_task_config(data: dict[str, Any], source: str | Path = "<task>") -> TaskConfig:
    """Validate one task's keys (``include`` already resolved) into a ``TaskConfig``."""
    path = Path(source)
    for key, why in UNSUPPORTED_KEYS.items():
        if key in data and data[key] is not None:
            raise TaskConfigError(f"{path}: {key}: not supported ({why})")
    for key, value in data.items():
        if isinstance(value, _Function):
            raise TaskConfigError(f"{path}: {key}: !function {value.ref} is not supported")
    known = {f.name for f in dataclasses.fields(TaskConfig)} - {"source", "raw"} | IGNORED_KEYS
    unknown = sorted(set(data) - known)
    if unknown:
        raise TaskConfigError(f"{path}: {unknown[0]}: unknown key")
    task = _opt_str(path, data, "task")
    if not task:
        raise TaskConfigError(f"{path}: task: missing (every task YAML needs a name)")
    dataset_path = _opt_str(path, data, "dataset_path")
    if not dataset_path:
        raise TaskConfigError(f"{path}: dataset_path: missing (json, csv, parquet or a local folder)")
    output_type = data.get("output_type", "generate_until")
    if output_type not in OUTPUT_TYPES:
        raise TaskConfigError(f"{path}: output_type: {output_type!r} is not one of {', '.join(OUTPUT_TYPES)}")
    kwargs = data.get("dataset_kwargs") or {}
    if not isinstance(kwargs, dict):
        raise TaskConfigError(
            f"{path}: dataset_kwargs: must be a mapping (e.g. data_files: {{test: f.jsonl}})"
        )
    splits = {k: _opt_str(path, data, k) for k in ("training_split", "validation_split", "test_split")}
    if not splits["test_split"] and not splits["validation_split"]:
        raise TaskConfigError(f"{path}: test_split: missing (set test_split or validation_split)")
    if output_type == "loglikelihood_rolling":
        if data.get("doc_to_target") is None:
            raise TaskConfigError(f"{path}: doc_to_target: missing (the text whose likelihood is measured)")
    else:
        for key in ("doc_to_text", "doc_to_target"):
            if data.get(key) is None:
                raise TaskConfigError(f"{path}: {key}: missing")
    if output_type == "multiple_choice" and data.get("doc_to_choice") is None:
        raise TaskConfigError(f"{path}: doc_to_choice: missing (multiple_choice needs the list of choices)")
    num_fewshot = data.get("num_fewshot")
    if num_fewshot is not None and (not isinstance(num_fewshot, int) or num_fewshot < 0):
        raise TaskConfigError(f"{path}: num_fewshot: must be a non-negative integer")
    repeats = data.get("repeats", 1)
    if repeats != 1:
        raise TaskConfigError(f"{path}: repeats: only 1 is supported (greedy decoding is deterministic)")
    target_delimiter = data.get("target_delimiter", " ")
    fewshot_delimiter = data.get("fewshot_delimiter", "\n\n")
    for key, value in (("target_delimiter", target_delimiter), ("fewshot_delimiter", fewshot_delimiter)):
        if not isinstance(value, str):
            raise TaskConfigError(f"{path}: {key}: must be a string")
    description = data.get("description") or ""
    if not isinstance(description, str):
        raise TaskConfigError(f"{path}: description: must be a string or template")
    metadata = data.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise TaskConfigError(f"{path}: metadata: must be a mapping")
    parent = {
        "split": _opt_str(path, data, "fewshot_split"),
        "doc_to_text": data.get("doc_to_text"),
        "doc_to_target": data.get("doc_to_target"),
        "doc_to_choice": data.get("doc_to_choice"),
        "fewshot_delimiter": fewshot_delimiter,
        "target_delimiter": target_delimiter,
    }
    return TaskConfig(
        task=task,
        dataset_path=dataset_path,
        output_type=output_type,
        source=str(path),
        dataset_kwargs=dict(kwargs),
        training_split=splits["training_split"],
        validation_split=splits["validation_split"],
        test_split=splits["test_split"],
        fewshot_split=_opt_str(path, data, "fewshot_split"),
        doc_to_text=_template(path, data, "doc_to_text"),
        doc_to_target=_template(path, data, "doc_to_target", allow_list=True),
        doc_to_choice=_template(path, data, "doc_to_choice", allow_list=True),
        description=description,
        target_delimiter=target_delimiter,
        fewshot_delimiter=fewshot_delimiter,
        fewshot_config=_fewshot(path, data, parent),
        num_fewshot=num_fewshot,
        metric_list=_metrics(path, data, output_type),
        generation_kwargs=_generation_kwargs(path, data, fewshot_delimiter)
        if output_type == "generate_until"
        else None,
        metadata=dict(metadata),
        raw=dict(data),
    )


def load_task_config(path: str | Path) -> TaskConfig:
    """Read and validate one task YAML file."""
    path = Path(path).resolve()
    return parse_task_config(_read_yaml(path), path)


BUILTIN_TASKS_DIR = Path(__file__).parent / "tasks"


def discover_tasks(dirs: list[str | Path] | None = None) -> dict[str, Path]:
    """Map task name -> YAML file over the built-in tasks and ``dirs`` (later folders win).

    Files without a ``task:`` key (bases for ``include:``) are skipped; a file that
    is not valid YAML is skipped here and reported when a task names it.
    """
    found: dict[str, Path] = {}
    for root in [BUILTIN_TASKS_DIR, *(Path(d) for d in dirs or [])]:
        if not root.is_dir():
            raise TaskConfigError(f"--tasks-dir: {root} is not a folder")
        for path in sorted(root.rglob("*.yaml")):
            try:
                data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskLoader)  # noqa: S506
            except (yaml.YAMLError, OSError, UnicodeDecodeError):
                continue
            if isinstance(data, dict) and isinstance(data.get("task"), str):
                found[data["task"]] = path.resolve()
    return found


def resolve_tasks(
    names: list[str], dirs: list[str | Path] | None = None, registry_only: bool = False
) -> list[TaskConfig]:
    """Task configs for ``names``: registered task names or paths to YAML files.

    ``registry_only`` (what the web's workers ask for) looks names up in the registry and
    nothing else, and refuses a name that looks like a path before anything is read.
    """
    if registry_only:
        for name in names:
            check_task_name(name, "--tasks")
    registry = discover_tasks(dirs)
    configs = []
    for name in names:
        if not registry_only and name.endswith((".yaml", ".yml")) and Path(name).is_file():
            configs.append(load_task_config(name))
        elif name in registry:
            configs.append(load_task_config(registry[name]))
        else:
            known = ", ".join(sorted(registry)) or "none"
            raise TaskConfigError(f"--tasks: unknown task {name!r} (known: {known})")
    return configs
