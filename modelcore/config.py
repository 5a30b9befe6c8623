"""The run configuration: one schema for the web form, the API and the CLI.

Every field carries its help text, bounds and choices in ``field(metadata=...)``.
From these we derive validation with errors keyed by field path
(``model.n_heads: must divide model.d_model (512)``), the form sections, the
JSON schema and ``--set section.field=value`` parsing. This module imports no
torch so the web process can use it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

SECTIONS = ("model", "data", "optim", "parallel", "train", "eval", "resources", "launcher")


@dataclass(frozen=True)
class PathSpec:
    """Marks a field whose value names a file or folder the trainer reads.

    The CLI trusts its caller and reads any path. A config submitted through the
    web or the API may name only what its team may read, and that policy
    (``webapp/runs/config_paths.py``) enumerates the fields carrying this marker,
    so a path field added here is covered without touching the web.

    ``builtins``: values that name no path (``stdlib``, ``byte``, empty).
    ``sources``: what else a web-submitted value may name: ``"dataset"`` (a file or
    folder under the operator's dataset roots), ``"model"`` (a Hugging Face folder
    under the data directory's models folder) or ``"run"`` (a run or checkpoint of a
    project the user can see, by reference ``run:<id>`` or ``run:<id>:<step>``).
    ``model_file``: the file a model folder must hold to be offered for this field.
    """

    builtins: tuple[str, ...] = ()
    sources: tuple[str, ...] = ()
    model_file: str = "config.json"


def _f(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    choices: tuple[str, ...] | None = None,
    advanced: bool = False,
    path_spec: PathSpec | None = None,
) -> Any:
    """A dataclass field with the metadata the form, API and validator read."""
    meta = {
        "help": help,
        "min": min,
        "max": max,
        "choices": choices,
        "advanced": advanced,
        "path_spec": path_spec,
    }
    return field(default=default, metadata=meta)


class ConfigError(ValueError):
    """A config that does not validate; ``errors`` maps field path to message."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = _f(
        384, "Vocabulary size; must cover the tokenizer (byte-level needs 260).", min=8, max=1_048_576
    )
    d_model: int = _f(128, "Hidden size of the residual stream.", min=8, max=65_536)
    n_layers: int = _f(2, "Number of transformer blocks.", min=1, max=512)
    n_heads: int = _f(4, "Attention (query) heads; must divide d_model.", min=1, max=1024)
    n_kv_heads: int = _f(
        0,
        "Key/value heads for grouped-query attention; 0 means n_heads. Must divide n_heads.",
        min=0,
        max=1024,
    )
    d_ff: int = _f(
        0, "SwiGLU hidden size; 0 means 8/3 * d_model rounded up to a multiple of 64.", min=0, max=1_048_576
    )
    max_seq_len: int = _f(256, "Longest sequence the rotary tables are built for.", min=8, max=1_048_576)
    rope_theta: float = _f(10_000.0, "Rotary embedding base.", min=1.0, advanced=True)
    norm_eps: float = _f(1e-5, "RMSNorm epsilon.", min=0.0, max=1.0, advanced=True)
    tie_embeddings: bool = _f(True, "Share the input embedding and output projection weights.")
    init_std: float = _f(
        0.02, "Standard deviation of the weight initialisation.", min=0.0, max=1.0, advanced=True
    )
    n_experts: int = _f(0, "Experts per MoE layer; 0 builds a dense model.", min=0, max=1024)
    moe_top_k: int = _f(2, "Experts each token is routed to (MoE only).", min=1, max=64)
    moe_capacity_factor: float = _f(
        0.0,
        "Expert capacity as a multiple of the fair share; 0 is dropless routing (MoE only).",
        min=0.0,
        max=64.0,
    )
    moe_aux_loss_coef: float = _f(
        0.01, "Weight of the load-balancing loss (MoE only).", min=0.0, max=10.0, advanced=True
    )
    moe_z_loss_coef: float = _f(
        0.001, "Weight of the router z-loss (MoE only).", min=0.0, max=10.0, advanced=True
    )
    kernels: str = _f(
        "torch",
        "Kernel implementation: plain PyTorch, torch.compile, or fused Triton kernels (CUDA only).",
        choices=("torch", "compile", "triton"),
    )

    @property
    def kv_heads(self) -> int:
        return self.n_kv_heads or self.n_heads

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        if self.d_ff:
            return self.d_ff
        return 64 * ((8 * self.d_model // 3 + 63) // 64)

    def num_params(self, *, include_embeddings: bool = True) -> int:
        """Parameter count of the model this config builds (all experts counted)."""
        d, kv_dim = self.d_model, self.kv_heads * self.head_dim
        attn = d * d + 2 * d * kv_dim + d * d
        mlp = 3 * d * self.ffn_hidden
        if self.n_experts:
            mlp = self.n_experts * mlp + d * self.n_experts  # experts + router
        per_layer = attn + mlp + 2 * d
        total = self.n_layers * per_layer + d  # + final norm
        if include_embeddings:
            total += self.vocab_size * d * (1 if self.tie_embeddings else 2)
        return total

    def num_active_params(self) -> int:
        """Parameters a token passes through, without the input embedding (for FLOPs)."""
        d = self.d_model
        mlp_all = 3 * d * self.ffn_hidden
        total = self.num_params(include_embeddings=False)
        if self.n_experts:
            total -= (self.n_experts - self.moe_top_k) * mlp_all * self.n_layers
        return total + self.vocab_size * d  # the output projection is a matmul per token

    def flops_per_token(self, seq_len: int) -> int:
        """Training FLOPs per token: 6N for the matmuls plus the attention scores (PaLM)."""
        return 6 * self.num_active_params() + 12 * self.n_layers * self.d_model * seq_len


@dataclass(frozen=True)
class DataConfig:
    corpus: str = _f(
        "stdlib",
        "'stdlib' (the Python standard library's source, shipped with "
        'every Python) or a path to a text, JSONL ("text" field) or Parquet file, or a folder '
        "of them, or a Hugging Face datasets folder saved with save_to_disk. Through the web: "
        "'stdlib' or a dataset under the operator's dataset folders.",
        path_spec=PathSpec(builtins=("stdlib",), sources=("dataset",)),
    )
    tokenizer: str = _f(
        "byte",
        "'byte' (UTF-8 bytes), 'bpe' (trained on the corpus) or a local Hugging Face tokenizer directory "
        "(through the web: a model folder under the data directory's models folder).",
        path_spec=PathSpec(builtins=("byte", "bpe"), sources=("model",), model_file="tokenizer.json"),
    )
    bpe_vocab_size: int = _f(
        4096, "Vocabulary of the BPE tokenizer trained on the corpus.", min=260, max=1_048_576, advanced=True
    )
    seq_len: int = _f(128, "Tokens per training sequence; at most model.max_seq_len.", min=8, max=1_048_576)
    max_corpus_mb: float = _f(4.0, "Read at most this many megabytes of the corpus; 0 is no limit.", min=0.0)
    val_fraction: float = _f(0.05, "Share of the corpus held out for validation.", min=0.0, max=0.5)


@dataclass(frozen=True)
class OptimConfig:
    lr: float = _f(3e-3, "Peak learning rate.", min=0.0, max=10.0)
    min_lr_ratio: float = _f(0.1, "Final learning rate as a fraction of the peak.", min=0.0, max=1.0)
    weight_decay: float = _f(0.1, "AdamW decoupled weight decay.", min=0.0, max=10.0)
    beta1: float = _f(0.9, "AdamW beta1.", min=0.0, max=1.0, advanced=True)
    beta2: float = _f(0.95, "AdamW beta2.", min=0.0, max=1.0, advanced=True)
    eps: float = _f(1e-8, "AdamW epsilon.", min=0.0, max=1.0, advanced=True)
    grad_clip: float = _f(1.0, "Clip the global gradient norm to this; 0 disables.", min=0.0)
    schedule: str = _f(
        "cosine", "Learning-rate schedule after warmup.", choices=("cosine", "wsd", "constant")
    )
    warmup_steps: int = _f(20, "Linear warmup steps.", min=0)
    decay_fraction: float = _f(
        0.2, "Share of steps spent decaying at the end (WSD only).", min=0.0, max=1.0, advanced=True
    )


@dataclass(frozen=True)
class ParallelConfig:
    num_processes: int = _f(
        1,
        "Processes to launch: one per GPU, or CPU processes with gloo when the machine has no GPU.",
        min=1,
        max=1024,
    )
    device: str = _f(
        "auto",
        "Where the processes run: auto uses the worker's GPUs when it has them and CPU processes "
        "with gloo otherwise; cpu always uses CPU processes (small runs, tests); cuda requires GPUs.",
        choices=("auto", "cpu", "cuda"),
    )
    strategy: str = _f(
        "ddp", "Data parallelism: DDP replicates the model, FSDP shards it.", choices=("ddp", "fsdp")
    )
    mixed_precision: str = _f(
        "no", "Autocast precision; fp16 uses loss scaling.", choices=("no", "bf16", "fp16")
    )
    activation_checkpointing: bool = _f(
        False, "Recompute block activations in the backward pass to save memory.", advanced=True
    )
    compile: bool = _f(False, "Wrap the model in torch.compile.", advanced=True)
    tensor_parallel: int = _f(
        1,
        "Tensor-parallel degree: each block's heads and hidden units split over this many "
        "processes (Megatron layout); data parallel runs over num_processes / tensor_parallel.",
        min=1,
        max=1024,
    )
    expert_parallel: int = _f(
        1,
        "Expert-parallel degree (mixture-of-experts models): each MoE layer's experts split over "
        "this many processes, which train the same batch and exchange tokens with all-to-all; "
        "data parallel runs over num_processes / (tensor_parallel x expert_parallel).",
        min=1,
        max=1024,
    )
    sequence_parallel: bool = _f(
        True,
        "With tensor_parallel > 1: split the norms and the residual stream by position between "
        "the tensor-parallel layers (less activation memory, same result).",
        advanced=True,
    )

    @property
    def data_parallel(self) -> int:
        """Processes that train different batches: num_processes / (tensor_parallel x expert_parallel)."""
        return max(1, self.num_processes // (self.tensor_parallel * self.expert_parallel))


@dataclass(frozen=True)
class TrainConfig:
    max_steps: int = _f(200, "Optimizer steps to train.", min=1, max=100_000_000)
    micro_batch_size: int = _f(8, "Sequences per process per forward pass.", min=1, max=1_000_000)
    grad_accum_steps: int = _f(1, "Micro-batches accumulated per optimizer step.", min=1, max=100_000)
    log_every: int = _f(5, "Log metrics every this many steps.", min=1)
    eval_every: int = _f(50, "Evaluate validation loss every this many steps; 0 disables.", min=0)
    eval_batches: int = _f(4, "Validation batches per evaluation.", min=1, advanced=True)
    checkpoint_every: int = _f(
        100, "Save a checkpoint every this many steps; 0 saves only at the end and on cancel.", min=0
    )
    keep_last: int = _f(2, "Checkpoints to keep; older ones are deleted.", min=1)
    max_restarts: int = _f(
        0,
        "A run whose worker is lost is resumed from its last checkpoint on its own this many times; "
        "0 leaves it lost for a person to resume.",
        min=0,
        max=100,
        advanced=True,
    )
    seed: int = _f(1337, "Random seed for weights, data order and dropout.", min=0)
    nan_policy: str = _f(
        "fail", "On a NaN/inf loss: fail the run, or skip the step.", choices=("fail", "skip"), advanced=True
    )
    rank_timeout_s: int = _f(
        600, "A collective that waits longer than this fails the run.", min=10, advanced=True
    )
    cancel_grace_s: int = _f(
        0,
        "On cancel, seconds the trainer gets to save its checkpoint after SIGTERM before it is "
        "killed; 0 sizes it from the checkpoint's bytes (30 s + weights and optimizer state "
        "written at 100 MB/s).",
        min=0,
        max=86_400,
        advanced=True,
    )
    system_metrics_every_s: int = _f(
        30,
        "Log CPU, memory and GPU use (utilisation, memory, power, temperature) of every rank at "
        "least this many seconds apart, at a logging step, on the run page's system panel; 0 disables.",
        min=0,
        max=86_400,
        advanced=True,
    )
    sample_every: int = _f(
        0,
        "Generate from the current weights every this many steps (and at the end), shown on the run "
        "page by step; 0 disables.",
        min=0,
    )
    sample_prompts: str = _f(
        "def |import ",
        "Prompts to continue at each sample step, separated by | (at most 8).",
        advanced=True,
    )
    sample_temperature: float = _f(0.8, "Sampling temperature; 0 is greedy.", min=0.0, max=5.0, advanced=True)
    sample_top_p: float = _f(0.95, "Nucleus (top-p) sampling mass.", min=0.01, max=1.0, advanced=True)
    sample_max_tokens: int = _f(48, "Tokens generated per prompt.", min=1, max=1024, advanced=True)
    init_from: str = _f(
        "",
        "Initialise weights from a Hugging Face Llama directory, a Runwright run directory (its "
        "latest checkpoint) or one checkpoint directory; empty trains from scratch. Through the web: "
        "a model folder under the data directory's models folder, or run:<id> / run:<id>:<step>.",
        advanced=True,
        path_spec=PathSpec(builtins=("",), sources=("model", "run")),
    )


@dataclass(frozen=True)
class EvalConfig:
    tasks: str = _f("", "Comma-separated benchmark tasks to run on checkpoints during training.")
    every: int = _f(0, "Run the tasks every this many steps; 0 only at the end.", min=0)
    limit: int = _f(0, "Evaluate at most this many samples per task; 0 is all.", min=0)


@dataclass(frozen=True)
class ResourcesConfig:
    """What the fleet scheduler (``workers.scheduler``) needs to place the run; the trainer ignores it."""

    priority: int = _f(
        0,
        "Scheduling priority: among queued runs a higher one is placed first, then the earlier.",
        min=0,
        max=100,
    )
    gpu_model: str = _f(
        "",
        "Place the run only on GPUs whose model name contains this (e.g. H100); empty: any.",
        advanced=True,
    )
    host: str = _f(
        "", "Place the run only on this worker host (its registered name); empty: any.", advanced=True
    )


# A Slurm name (partition, account, QOS): these go to sbatch, so nothing but plain name characters.
_SLURM_NAME = re.compile(r"[A-Za-z0-9_.-]{0,64}")
MAX_TIME_LIMIT_MIN = 366 * 24 * 60


@dataclass(frozen=True)
class LauncherConfig:
    """How a cluster scheduler runs the job (``RUNWRIGHT_LAUNCHER=slurm``); a lone local worker ignores it.

    ``nodes`` also spreads a run over that many hosts of the fleet (``RUNWRIGHT_FLEET``).

    Empty names and a zero time limit take the operator's defaults (``RUNWRIGHT_SLURM_*``).
    """

    nodes: int = _f(
        1,
        "Nodes the run spans: Slurm nodes, or hosts of the fleet (RUNWRIGHT_FLEET); "
        "parallel.num_processes is split evenly between them (one torchrun per node, the "
        "rendezvous on the first).",
        min=1,
        max=1024,
    )
    partition: str = _f("", "Slurm partition; empty: the operator's default.", advanced=True)
    account: str = _f("", "Slurm account charged; empty: the operator's default.", advanced=True)
    qos: str = _f("", "Slurm quality of service; empty: the operator's default.", advanced=True)
    time_limit_min: int = _f(
        0,
        "Slurm time limit in minutes; 0: the operator's default. The trainer checkpoints before it "
        "and, with train.max_restarts, a new job resumes from there.",
        min=0,
        max=MAX_TIME_LIMIT_MIN,
        advanced=True,
    )


@dataclass(frozen=True)
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    launcher: LauncherConfig = field(default_factory=LauncherConfig)

    def __post_init__(self) -> None:
        errors = _check_fields(self) | _check_relations(self)
        if errors:
            raise ConfigError(errors)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def tokens_per_step(self) -> int:
        t = self.train
        return self.data.seq_len * t.micro_batch_size * t.grad_accum_steps * self.parallel.data_parallel

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], base: RunConfig | None = None) -> RunConfig:
        """Lay a partial ``{section: {field: value}}`` dict over ``base`` (default: defaults).

        Unknown keys, wrong types and bad values raise ``ConfigError`` with every
        problem keyed by its field path, so a form can show them all at once.
        """
        merged = copy.deepcopy(base.to_dict() if base is not None else _defaults_dict())
        errors: dict[str, str] = {}
        if not isinstance(data, Mapping):
            raise ConfigError({"config": 'must be an object of sections, e.g. {"model": {...}}'})
        for section, values in data.items():
            if section not in SECTIONS:
                errors[str(section)] = f"unknown section; expected one of {', '.join(SECTIONS)}"
                continue
            if not isinstance(values, Mapping):
                errors[section] = "must be an object of fields"
                continue
            known = {f.name: f for f in dataclasses.fields(_SECTION_TYPES[section])}
            for name, value in values.items():
                path = f"{section}.{name}"
                if name not in known:
                    errors[path] = "unknown field"
                    continue
                try:
                    merged[section][name] = _coerce(known[name], value)
                except ValueError as exc:
                    errors[path] = str(exc)
        if not errors:
            return build(merged)
        # Fields with a wrong type kept their base value; still check the rest so a
        # form shows every problem at once, not the range errors after a resubmit.
        try:
            build(merged)
        except ConfigError as exc:
            errors = {**exc.errors, **errors}
        raise ConfigError(errors)


_SECTION_TYPES: dict[str, type] = {
    "model": ModelConfig,
    "data": DataConfig,
    "optim": OptimConfig,
    "parallel": ParallelConfig,
    "train": TrainConfig,
    "eval": EvalConfig,
    "resources": ResourcesConfig,
    "launcher": LauncherConfig,
}


def _defaults_dict() -> dict[str, dict[str, Any]]:
    return {s: dataclasses.asdict(t()) for s, t in _SECTION_TYPES.items()}


def build(sections: Mapping[str, Mapping[str, Any]]) -> RunConfig:
    """Construct a RunConfig from complete, already typed section dicts (validates)."""
    # The sections are built without validation; RunConfig.__post_init__ checks
    # all fields at once so every error is reported, not just the first.
    parts = {s: _SECTION_TYPES[s](**sections.get(s, {})) for s in SECTIONS}
    return RunConfig(**parts)


def _coerce(f: dataclasses.Field, value: Any) -> Any:
    """Check a JSON value against the field's type; ints are accepted for floats."""
    kind = f.type if isinstance(f.type, str) else f.type.__name__
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ValueError("must be true or false")
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ValueError("must be a whole number")
        return value
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError("must be a number")
        return float(value)
    if kind == "str":
        if not isinstance(value, str):
            raise ValueError("must be a string")
        return value
    raise AssertionError(f"unhandled field type {kind}")


def _check_fields(cfg: RunConfig) -> dict[str, str]:
    errors = {}
    for section in SECTIONS:
        part = getattr(cfg, section)
        for f in dataclasses.fields(part):
            value = getattr(part, f.name)
            path, meta = f"{section}.{f.name}", f.metadata
            try:
                value = _coerce(f, value)
            except ValueError as exc:
                errors[path] = str(exc)
                continue
            if meta["choices"] and value not in meta["choices"]:
                errors[path] = f"must be one of {', '.join(meta['choices'])} (got {value!r})"
            elif meta["min"] is not None and value < meta["min"]:
                errors[path] = f"must be at least {_num(meta['min'])} (got {_num(value)})"
            elif meta["max"] is not None and value > meta["max"]:
                errors[path] = f"must be at most {_num(meta['max'])} (got {_num(value)})"
    return errors


MAX_SAMPLE_PROMPTS = 8
_RESOURCE_NAME = re.compile(r"[A-Za-z0-9 ._@-]*")


def sample_prompts(text: str) -> list[str]:
    """``train.sample_prompts`` as its prompts: split at ``|``, blank ones dropped (spaces kept)."""
    return [p for p in text.split("|") if p.strip()]


def _check_relations(cfg: RunConfig) -> dict[str, str]:
    """Rules that involve more than one field; each error names the field to change."""
    errors = {}
    m, d, t = cfg.model, cfg.data, cfg.train
    if m.n_heads and m.d_model % m.n_heads:
        errors["model.n_heads"] = f"must divide model.d_model ({m.d_model})"
    elif m.n_heads and (m.d_model // m.n_heads) % 2:
        errors["model.n_heads"] = (
            f"must leave an even head size for rotary embeddings "
            f"(model.d_model / model.n_heads = {m.d_model / m.n_heads:g})"
        )
    if m.n_kv_heads and m.n_heads % m.n_kv_heads:
        errors["model.n_kv_heads"] = f"must divide model.n_heads ({m.n_heads})"
    if m.n_experts and m.moe_top_k > m.n_experts:
        errors["model.moe_top_k"] = f"must be at most model.n_experts ({m.n_experts})"
    if d.seq_len > m.max_seq_len:
        errors["data.seq_len"] = f"must be at most model.max_seq_len ({m.max_seq_len})"
    if d.tokenizer == "byte" and m.vocab_size < 260:
        errors["model.vocab_size"] = "must be at least 260 for the byte tokenizer (256 bytes + 4 specials)"
    if d.tokenizer == "bpe" and m.vocab_size < d.bpe_vocab_size:
        errors["model.vocab_size"] = f"must be at least data.bpe_vocab_size ({d.bpe_vocab_size})"
    if not d.corpus.strip():
        errors["data.corpus"] = "must not be empty; use 'stdlib' for the built-in corpus"
    if t.sample_every and not sample_prompts(t.sample_prompts):
        errors["train.sample_prompts"] = "must hold at least one prompt when train.sample_every is set"
    elif len(sample_prompts(t.sample_prompts)) > MAX_SAMPLE_PROMPTS:
        errors["train.sample_prompts"] = (
            f"at most {MAX_SAMPLE_PROMPTS} prompts (got {len(sample_prompts(t.sample_prompts))})"
        )
    for name in ("gpu_model", "host"):
        value = getattr(cfg.resources, name)
        if len(value) > 100 or not _RESOURCE_NAME.fullmatch(value):
            errors[f"resources.{name}"] = "must be at most 100 letters, digits, spaces and . _ - @"
    for name in ("partition", "account", "qos"):
        if not _SLURM_NAME.fullmatch(getattr(cfg.launcher, name)):
            errors[f"launcher.{name}"] = "must be at most 64 letters, digits and . _ - (a Slurm name)"
    if cfg.launcher.nodes >= 1 and cfg.parallel.num_processes % cfg.launcher.nodes:
        errors["launcher.nodes"] = (
            f"must divide parallel.num_processes ({cfg.parallel.num_processes}): each node runs an equal share"
        )
    if cfg.optim.warmup_steps > t.max_steps:
        errors["optim.warmup_steps"] = f"must be at most train.max_steps ({t.max_steps})"
    errors |= _check_layout(cfg)
    return errors


def _check_layout(cfg: RunConfig) -> dict[str, str]:
    """Impossible process layouts (tensor parallel x data parallel), each keyed by the field to change."""
    m, p = cfg.model, cfg.parallel
    tp = p.tensor_parallel
    if p.expert_parallel > 1:
        return _check_expert_layout(cfg)
    if tp <= 1:
        return {}
    key = "parallel.tensor_parallel"
    if p.num_processes % tp:
        return {key: f"must divide parallel.num_processes ({p.num_processes}): data parallel is the rest"}
    if m.n_experts:
        return {key: "must be 1 for a mixture-of-experts model (model.n_experts > 0)"}
    if m.n_heads % tp:
        return {key: f"must divide model.n_heads ({m.n_heads}): each process computes whole heads"}
    if m.kv_heads % tp and tp % m.kv_heads:
        return {
            key: f"must divide model.n_kv_heads ({m.kv_heads}) or be a multiple of it, so the "
            "key/value heads can be split or replicated"
        }
    if m.vocab_size < tp:
        return {key: f"must be at most model.vocab_size ({m.vocab_size})"}
    if p.strategy == "ddp" and p.data_parallel > 1:
        return {
            "parallel.strategy": "must be fsdp when tensor parallel runs beside data parallel "
            f"(parallel.tensor_parallel {tp} on {p.num_processes} processes)"
        }
    if p.mixed_precision == "fp16":
        return {"parallel.mixed_precision": "fp16 needs a loss scaler tensor parallel has not; use bf16"}
    if p.sequence_parallel and cfg.data.seq_len % tp:
        return {
            "parallel.sequence_parallel": f"needs data.seq_len ({cfg.data.seq_len}) divisible by "
            f"parallel.tensor_parallel ({tp}): each process holds an equal share of the positions"
        }
    return {}


def _check_expert_layout(cfg: RunConfig) -> dict[str, str]:
    """Impossible expert-parallel layouts. The EP group is its own mesh dimension: its
    processes train the same batch (EP does not borrow from data parallel, as torchtitan's does)."""
    m, p = cfg.model, cfg.parallel
    ep, key = p.expert_parallel, "parallel.expert_parallel"
    if not m.n_experts:
        return {key: "must be 1 for a dense model (model.n_experts is 0): only MoE layers split by expert"}
    if m.n_experts % ep:
        return {key: f"must divide model.n_experts ({m.n_experts}): each process holds whole experts"}
    if p.tensor_parallel > 1:
        return {"parallel.tensor_parallel": "must be 1 for a mixture-of-experts model (model.n_experts > 0)"}
    if p.num_processes % ep:
        return {key: f"must divide parallel.num_processes ({p.num_processes}): data parallel is the rest"}
    if p.mixed_precision == "fp16":
        return {"parallel.mixed_precision": "fp16 needs a loss scaler expert parallel has not; use bf16"}
    return {}


def _num(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


# --- presets -----------------------------------------------------------------

# Trains to a falling loss in well under a minute on 2 CPU processes.
_TINY_CPU: dict[str, dict[str, Any]] = {
    "model": {
        "vocab_size": 260,
        "d_model": 64,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 2,
        "max_seq_len": 128,
    },
    "data": {"seq_len": 64, "max_corpus_mb": 1.0},
    "optim": {"lr": 3e-3, "warmup_steps": 10},
    "parallel": {"num_processes": 2, "device": "cpu"},
    "train": {
        "max_steps": 60,
        "micro_batch_size": 8,
        "log_every": 2,
        "eval_every": 20,
        "eval_batches": 2,
        "checkpoint_every": 0,
    },
}

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tiny-cpu": _TINY_CPU,
    # The same, with 4 experts of which each token uses 2.
    "tiny-moe-cpu": {
        **_TINY_CPU,
        "model": {**_TINY_CPU["model"], "n_experts": 4, "moe_top_k": 2, "d_ff": 128},
    },
    # GPT-2 small sized Llama (about 124M parameters with a 32k BPE vocabulary).
    "gpt2-small": {
        "model": {
            "vocab_size": 32768,
            "d_model": 768,
            "n_layers": 12,
            "n_heads": 12,
            "max_seq_len": 1024,
            "tie_embeddings": True,
            "kernels": "triton",
        },
        "data": {"tokenizer": "bpe", "bpe_vocab_size": 32768, "seq_len": 1024, "max_corpus_mb": 0.0},
        "optim": {"lr": 6e-4, "warmup_steps": 500},
        "parallel": {"num_processes": 1, "mixed_precision": "bf16"},
        "train": {
            "max_steps": 20000,
            "micro_batch_size": 16,
            "grad_accum_steps": 4,
            "log_every": 10,
            "eval_every": 500,
            "checkpoint_every": 1000,
            "max_restarts": 2,  # a lost GPU worker is common at this size: resume on our own
        },
    },
    "llama-1b": {
        "model": {
            "vocab_size": 32768,
            "d_model": 2048,
            "n_layers": 16,
            "n_heads": 32,
            "n_kv_heads": 8,
            "d_ff": 8192,
            "max_seq_len": 2048,
            "rope_theta": 500000.0,
            "tie_embeddings": True,
            "kernels": "triton",
        },
        "data": {"tokenizer": "bpe", "bpe_vocab_size": 32768, "seq_len": 2048, "max_corpus_mb": 0.0},
        "optim": {"lr": 3e-4, "warmup_steps": 2000, "schedule": "wsd"},
        "parallel": {
            "num_processes": 8,
            "strategy": "fsdp",
            "mixed_precision": "bf16",
            "activation_checkpointing": True,
        },
        "train": {
            "max_steps": 100000,
            "micro_batch_size": 4,
            "grad_accum_steps": 8,
            "log_every": 10,
            "eval_every": 1000,
            "checkpoint_every": 2000,
            "max_restarts": 2,  # a lost GPU worker is common at this size: resume on our own
        },
    },
    "moe-small": {
        "model": {
            "vocab_size": 32768,
            "d_model": 768,
            "n_layers": 12,
            "n_heads": 12,
            "n_kv_heads": 4,
            "d_ff": 1536,
            "max_seq_len": 1024,
            "n_experts": 8,
            "moe_top_k": 2,
            "kernels": "triton",
        },
        "data": {"tokenizer": "bpe", "bpe_vocab_size": 32768, "seq_len": 1024, "max_corpus_mb": 0.0},
        "optim": {"lr": 6e-4, "warmup_steps": 500},
        "parallel": {"num_processes": 8, "mixed_precision": "bf16"},
        "train": {
            "max_steps": 20000,
            "micro_batch_size": 8,
            "grad_accum_steps": 2,
            "log_every": 10,
            "eval_every": 500,
            "checkpoint_every": 1000,
            "max_restarts": 2,  # a lost GPU worker is common at this size: resume on our own
        },
    },
}


def preset(name: str) -> RunConfig:
    """The named preset as a validated RunConfig."""
    if name not in PRESETS:
        raise ConfigError({"preset": f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}"})
    return RunConfig.from_dict(PRESETS[name])


def resolve(preset_name: str | None = None, overrides: Mapping[str, Any] | None = None) -> RunConfig:
    """Defaults, then the preset (if any), then the partial overrides: what form, API and CLI do."""
    base = preset(preset_name) if preset_name else RunConfig()
    return RunConfig.from_dict(overrides or {}, base=base)


def parse_assignments(items: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Turn CLI ``section.field=value`` strings into a partial config dict.

    Values are read as JSON where they parse (numbers, true/false), otherwise as
    strings, so ``--set data.corpus=/tmp/x.txt`` needs no quoting.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError({key or item: "expected section.field=value, e.g. model.n_layers=4"})
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(section, {})[name] = value
    return out


def field_schema() -> list[dict[str, Any]]:
    """Sections and fields with type, default, help and bounds: what forms and docs render."""
    sections = []
    for section in SECTIONS:
        fields = []
        for f in dataclasses.fields(_SECTION_TYPES[section]):
            kind = f.type if isinstance(f.type, str) else f.type.__name__
            fields.append(
                {
                    "name": f.name,
                    "path": f"{section}.{f.name}",
                    "type": kind,
                    "default": f.default,
                    **f.metadata,
                }
            )
        sections.append({"name": section, "title": section.capitalize(), "fields": fields})
    return sections


def json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) for a partial RunConfig, as the API accepts it."""
    types = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}
    props = {}
    for section in field_schema():
        fprops = {}
        for f in section["fields"]:
            p: dict[str, Any] = {"type": types[f["type"]], "default": f["default"], "description": f["help"]}
            if f["choices"]:
                p["enum"] = list(f["choices"])
            if f["min"] is not None:
                p["minimum"] = f["min"]
            if f["max"] is not None:
                p["maximum"] = f["max"]
            fprops[f["name"]] = p
        props[section["name"]] = {"type": "object", "properties": fprops, "additionalProperties": False}
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "RunConfig",
        "type": "object",
        "properties": props,
        "additionalProperties": False,
    }
