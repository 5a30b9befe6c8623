"""The training loop, run by every rank under Accelerate (DDP, FSDP, tensor parallel).

``modelcore.train`` owns the command line and the run's lifecycle (status
events, signals, exit codes); this module owns the steps. Every rank runs the
same code; only rank 0 writes events and the shared checkpoint files.

Ranks agree on everything through one small all-reduce per optimizer step
carrying the losses and a stop flag: a SIGTERM that reaches any rank stops all
of them at the same step boundary, and a NaN seen by one is seen by all.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed

from modelcore import checkpoint as ckpt
from modelcore import expert_parallel
from modelcore.config import RunConfig
from modelcore.data import (
    TokenSplits,
    WindowSampler,
    prepare_tokenizer,
    tokenize_corpus,
    validation_batches,
    wait_for_token_file,
)
from modelcore.events import EventWriter
from modelcore.model import Transformer
from modelcore.parallelize import (
    apply_ac,
    apply_compile,
    apply_ep,
    apply_fsdp,
    apply_tp,
    build_mesh,
    clip_grad_norm,
)
from modelcore.sampling import generate_samples, sample_due, whole_model
from modelcore.system_metrics import SystemMetrics

FAIL_AT_STEP_ENV = "RUNWRIGHT_FAIL_AT_STEP"  # test hook: raise at that step on every rank
STOP_AT_STEP_ENV = "RUNWRIGHT_STOP_AT_STEP"  # test hook: behave as if SIGTERM came during that step
HANG_AT_STEP_ENV = "RUNWRIGHT_HANG_AT_STEP"  # test hook: the last rank stops responding at that step
CACHE_DIR_ENV = "RUNWRIGHT_CACHE_DIR"  # where tokenized corpora are cached; default RUN_DIR/data

# Dense bf16/fp16 tensor-core peaks and fp32 (TF32) peaks in FLOP/s, by device-name fragment.
_PEAK_FLOPS = {
    "H200": (989e12, 494e12),
    "H100": (989e12, 494e12),
    "A100": (312e12, 156e12),
    "L40S": (362e12, 183e12),
    "L4": (121e12, 60e12),
    "A10": (125e12, 62e12),
    "4090": (165e12, 82e12),
    "V100": (125e12, 15.7e12),
}


class StopFlag(Protocol):
    """Set by a signal handler (see ``modelcore.train``); read at step boundaries."""

    requested: bool


@dataclass(frozen=True)
class FaultPlan:
    """Faults injected for tests, by 1-based step; 0 injects nothing. The trainer's only test hook.

    ``modelcore.train`` reads them from ``RUNWRIGHT_FAIL_AT_STEP`` / ``_STOP_AT_STEP`` /
    ``_HANG_AT_STEP`` (tests start trainers as subprocesses); in-process callers pass one.
    """

    fail_at_step: int = 0  # raise at the start of that step, on every rank
    stop_at_step: int = 0  # behave as if SIGTERM came during that step
    hang_at_step: int = 0  # the last rank stops taking part in collectives at that step

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> FaultPlan:
        def step(name: str) -> int:
            raw = environ.get(name, "").strip() or "0"
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{name} must be a step number, got {raw!r}") from None

        return cls(step(FAIL_AT_STEP_ENV), step(STOP_AT_STEP_ENV), step(HANG_AT_STEP_ENV))

    def before_step(self, step: int, last_rank: bool, stop: StopFlag) -> None:
        """Called at the start of 1-based ``step``: fail, or (on the last rank) hang until signalled."""
        if self.fail_at_step and step == self.fail_at_step:
            raise RuntimeError(f"injected failure at step {step} ({FAIL_AT_STEP_ENV} is set)")
        if self.hang_at_step and step == self.hang_at_step and last_rank:
            print(f"[warning] {HANG_AT_STEP_ENV}: this rank hangs", file=sys.stderr, flush=True)
            while not stop.requested:
                time.sleep(0.1)
            raise RuntimeError("hung rank signalled to stop")

    def stops_after(self, step: int) -> bool:
        """Whether 1-based ``step`` ends as if a SIGTERM had come during it."""
        return self.stop_at_step > 0 and step >= self.stop_at_step


def lr_multiplier(step: int, cfg: RunConfig) -> float:
    """Learning rate / peak at optimizer step ``step`` (0-based): warmup, then cosine, WSD or constant."""
    o, total = cfg.optim, cfg.train.max_steps
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    floor = o.min_lr_ratio
    if o.schedule == "constant":
        return 1.0
    if o.schedule == "cosine":
        progress = (step - o.warmup_steps) / max(1, total - o.warmup_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    # WSD: hold the peak, then decay linearly over the last decay_fraction of the run.
    decay_steps = max(1, round(total * o.decay_fraction))
    decay_start = total - decay_steps
    if step < decay_start:
        return 1.0
    return floor + (1 - floor) * max(0.0, 1 - (step - decay_start + 1) / decay_steps)


def device_peak_flops(device: torch.device, mixed_precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (half, single) in _PEAK_FLOPS.items():
        if fragment in name:
            return half if mixed_precision in ("bf16", "fp16") else single
    return None


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def library_versions() -> dict[str, str]:
    import accelerate
    import numpy

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "accelerate": accelerate.__version__,
        "numpy": numpy.__version__,
    }


def memory_gb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 1e9
    import psutil

    return psutil.Process().memory_info().rss / 1e9


def system_stats(device: torch.device) -> dict[str, float]:
    """Machine load seen from rank 0: CPU use and memory, and this node's GPUs when present."""
    import psutil

    stats = {"cpu/util": psutil.cpu_percent() / 100, "cpu/mem_used_gb": psutil.virtual_memory().used / 1e9}
    if device.type == "cuda":
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            stats[f"gpu{i}/mem_gb"] = (total - free) / 1e9
            with contextlib.suppress(ModuleNotFoundError, RuntimeError):  # utilization needs pynvml
                stats[f"gpu{i}/util"] = torch.cuda.utilization(i) / 100
    return stats


def _cpu_fused_adamw() -> bool:
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
    except (RuntimeError, TypeError, ValueError):
        return False
    return True


@dataclass
class StepStats:
    loss: float
    ce_loss: float
    aux_loss: float
    z_loss: float
    stop: bool
    expert_load: torch.Tensor | None  # (n_layers, E), mean over ranks


class Trainer:
    def __init__(
        self,
        cfg: RunConfig,
        run_dir: Path,
        events: EventWriter | None,
        stop: StopFlag,
        faults: FaultPlan | None = None,
    ):
        self.cfg, self.run_dir, self.events, self.stop = cfg, run_dir, events, stop
        self.faults = faults or FaultPlan()
        self.build_accelerator()
        self.build_data()
        self.model = self.parallelize(self.build_model())
        self.build_optimizer()
        self.build_validation()
        self.step = 0
        self.tokens_seen = 0
        self.system_metrics = SystemMetrics(
            cfg.train.system_metrics_every_s, self.device, self.rank, self.world
        )

    # --- builders, in the order __init__ calls them ----------------------------

    def build_accelerator(self) -> None:
        """The process group (Accelerate), the device, the (dp, tp) mesh, seeds and determinism."""
        p, t = self.cfg.parallel, self.cfg.train
        self.accelerator = Accelerator(
            cpu=p.device == "cpu",
            mixed_precision=p.mixed_precision,
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=t.rank_timeout_s))],
        )
        acc = self.accelerator
        self.device = acc.device
        self.rank, self.world = acc.process_index, acc.num_processes
        if self.world != p.num_processes:
            self.log(
                f"parallel.num_processes is {p.num_processes} but {self.world} processes "
                "were launched; the global batch follows the launched count",
                "warning",
            )
        self.tp, self.ep = p.tensor_parallel, p.expert_parallel
        if self.world % (self.tp * self.ep):
            raise ValueError(
                f"parallel.tensor_parallel ({self.tp}) x parallel.expert_parallel ({self.ep}) must divide "
                f"the {self.world} processes launched"
            )
        # Ranks [d * tp, (d + 1) * tp) form tensor-parallel group d (expert-parallel likewise);
        # data parallel runs across groups.
        group = self.tp * self.ep
        self.dp, self.dp_rank = self.world // group, self.rank // group
        self.mesh = build_mesh(self.device.type, self.world, self.tp, self.ep) if self.world > 1 else None
        # One data-parallel process has nothing to shard: FSDP then is plain training.
        self.fsdp = p.strategy == "fsdp" and self.dp > 1
        set_seed(t.seed)
        if self.device.type == "cpu":
            # Deterministic CPU runs: resume and DDP-equality tests compare losses exactly.
            torch.use_deterministic_algorithms(True, warn_only=True)
            # Deterministic mode also fills every new tensor with NaN, a debugging aid for reads of
            # uninitialised memory; it changes no result and costs ~1% of a CPU step.
            torch.utils.deterministic.fill_uninitialized_memory = False

    def build_data(self) -> None:
        """Tokenizer, token file and the training sampler (one stream per data-parallel rank)."""
        cfg, acc, t = self.cfg, self.accelerator, self.cfg.train
        # Rank 0 builds the tokenizer and token file; the others wait for the files
        # rather than in a barrier, whose timeout a long first tokenization would exceed.
        cache = Path(os.environ.get(CACHE_DIR_ENV) or self.run_dir / "data")
        if acc.is_main_process:
            self.tokenizer = prepare_tokenizer(cfg.data, self.run_dir)
            token_file = tokenize_corpus(
                cfg.data, self.tokenizer, self.run_dir / "tokenizer", cache, progress=self._data_progress
            )
        else:
            self.tokenizer, token_file = wait_for_token_file(
                cfg.data, self.run_dir, cache, lambda: self.stop.requested
            )
        if self.tokenizer.vocab_size > cfg.model.vocab_size:
            raise ValueError(
                f"model.vocab_size ({cfg.model.vocab_size}) is smaller than the "
                f"tokenizer's vocabulary ({self.tokenizer.vocab_size})"
            )
        self.splits = TokenSplits.open(token_file, cfg.data.val_fraction, cfg.data.seq_len)
        # The ranks of a tensor-parallel group train on the same batch.
        self.sampler = WindowSampler(
            self.splits.train,
            cfg.data.seq_len,
            t.micro_batch_size,
            t.grad_accum_steps,
            t.seed,
            self.dp_rank,
            self.dp,
        )

    def build_model(self) -> Transformer:
        """The whole model on this rank (same weights on every rank), before any parallelism."""
        cfg = self.cfg
        model_cfg = cfg.model
        if model_cfg.kernels == "triton" and self.device.type != "cuda":
            self.log("model.kernels=triton needs CUDA; using the plain PyTorch kernels", "warning")
            model_cfg = type(model_cfg)(**{**model_cfg.__dict__, "kernels": "torch"})
        model = Transformer(model_cfg)
        if cfg.train.init_from and not ckpt.list_checkpoints(self.run_dir):  # a resume restores its own
            from modelcore.init_from import load_initial_weights

            load_initial_weights(model, cfg.train.init_from, cfg)
            self.log(f"initialised weights from {cfg.train.init_from}")
        return model

    def parallelize(self, model: Transformer) -> torch.nn.Module:
        """Tensor parallel, activation checkpointing, compile, then FSDP or DDP (torchtitan's order)."""
        p = self.cfg.parallel
        if self.tp > 1:
            apply_tp(model.to(self.device), self.mesh["tp"], p.sequence_parallel)
        if self.ep > 1:
            apply_ep(model.to(self.device), self.mesh["ep"])
        if p.activation_checkpointing:
            apply_ac(model)
        if p.compile:
            apply_compile(model, per_block=self.fsdp)
        if self.fsdp:
            # Under EP the whole (dp, ep) mesh: experts sharded over dp, the rest over all ranks.
            fsdp_mesh = self.mesh if self.ep > 1 else self.mesh["dp"]
            return apply_fsdp(model.to(self.device), fsdp_mesh, p.mixed_precision)
        if self.tp > 1 or self.ep > 1:
            return model  # one data-parallel group: nothing to replicate
        return self.accelerator.prepare(model)  # DDP across processes, or the single process

    def build_optimizer(self) -> None:
        """AdamW over the (possibly sharded) parameters and the learning-rate schedule."""
        cfg = self.cfg
        optimizer = torch.optim.AdamW(
            self._param_groups(self.model),
            lr=cfg.optim.lr,
            betas=(cfg.optim.beta1, cfg.optim.beta2),
            eps=cfg.optim.eps,
            # Fused AdamW runs on CUDA and (torch >= 2.4) CPU tensors, not on DTensors on CPU.
            fused=self.device.type == "cuda" or (not self.sharded and _cpu_fused_adamw()) or None,
        )
        # A sharded model is not Accelerate's: its optimizer needs no wrapping either.
        self.optimizer = optimizer if self.sharded else self.accelerator.prepare(optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, cfg))

    def build_validation(self) -> None:
        """The held-out batches every evaluation reads (the same each time), one set per data-parallel rank."""
        cfg, t = self.cfg, self.cfg.train
        self.val_batches = (
            validation_batches(
                self.splits.val,
                cfg.data.seq_len,
                t.micro_batch_size,
                t.eval_batches,
                t.seed,
                self.dp_rank,
                self.dp,
            )
            if cfg.data.val_fraction > 0 and t.eval_every
            else []
        )

    @property
    def sharded(self) -> bool:
        """Whether the parameters are split (FSDP, tensor or expert parallel) rather than Accelerate's."""
        return self.fsdp or self.tp > 1 or self.ep > 1

    def forward_context(self) -> contextlib.AbstractContextManager:
        """Autocast for a tensor-parallel model (Accelerate's wrapper casts the others; FSDP casts itself)."""
        split = self.tp > 1 or self.ep > 1
        return self.accelerator.autocast() if split and not self.fsdp else nullcontext()

    # --- setup helpers ---------------------------------------------------------

    def _param_groups(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        # Weight decay on matrices (linear and embedding weights), not on norm gains.
        decay, no_decay = [], []
        for p in model.parameters():
            (decay if p.dim() >= 2 else no_decay).append(p)
        return [
            {"params": decay, "weight_decay": self.cfg.optim.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    def _data_progress(self, message: str) -> None:
        # A cancel during a long first tokenization must not wait for it to finish.
        if self.stop.requested:
            raise InterruptedError("cancelled while tokenizing the corpus")
        self.log(message)

    def log(self, message: str, level: str = "info") -> None:
        if self.events is not None:
            self.events.log(message, level)
        print(f"[{level}] {message}", file=sys.stderr, flush=True)  # stdout stays free for tools

    def describe(self) -> dict[str, Any]:
        cfg = self.cfg
        hardware: dict[str, Any] = {
            "device": self.device.type,
            "num_processes": self.world,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
        }
        if self.device.type == "cuda":
            hardware["gpu"] = torch.cuda.get_device_name(self.device)
        return {
            "config": cfg.to_dict(),
            "git_commit": git_commit(),
            "versions": library_versions(),
            "hardware": hardware,
            "num_params": cfg.model.num_params(),
            "flops_per_token": cfg.model.flops_per_token(cfg.data.seq_len),
            "tokens_per_step": self.tokens_per_step,
            "resumed_from_step": self.step or None,
            "distributed": str(self.accelerator.distributed_type),
            "data_parallel": self.parallel_mode,
            "mesh": {"dp": self.dp, "tp": self.tp, **({"ep": self.ep} if self.ep > 1 else {})},
        }

    @property
    def parallel_mode(self) -> str:
        """How data parallel runs: over FSDP, DDP, or not at all (one data-parallel rank)."""
        return "fsdp" if self.fsdp else ("ddp" if self.dp > 1 else "single")

    @property
    def tokens_per_step(self) -> int:
        t = self.cfg.train
        return self.cfg.data.seq_len * t.micro_batch_size * t.grad_accum_steps * self.dp

    # --- checkpoints -----------------------------------------------------------

    def save_checkpoint(self) -> None:
        acc, name = self.accelerator, ckpt.checkpoint_name(self.step)
        final = self.run_dir / ckpt.CHECKPOINTS_DIR / name
        if final.exists():
            return
        tmp = final.with_name(name + ".tmp")
        if acc.is_main_process:
            tmp.mkdir(parents=True, exist_ok=True)
        acc.wait_for_everyone()
        # Model and optimizer: every rank writes its own shard (a collective).
        ckpt.save_state(tmp, self.accelerator.unwrap_model(self.model), self.optimizer)
        if acc.is_main_process:
            torch.save({"scheduler": self.scheduler.state_dict(), "step": self.step}, tmp / "trainer.pt")
            ckpt.write_json(tmp / "sampler.json", self.sampler.state_dict())
            (tmp / "config.json").write_text(self.cfg.to_json())
            self.tokenizer.save(tmp / "tokenizer")
        torch.save(ckpt.rng_state(), tmp / f"rng_rank{self.rank}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            ckpt.write_json(
                tmp / "meta.json",
                {
                    "step": self.step,
                    "tokens_seen": self.tokens_seen,
                    "world_size": self.world,
                    "format": "dcp",
                    "time": time.time(),
                },
            )
            os.replace(tmp, final)
            if self.events is not None:
                self.events.checkpoint(self.step, f"{ckpt.CHECKPOINTS_DIR}/{name}")
            pruned = ckpt.prune_checkpoints(self.run_dir, self.cfg.train.keep_last)
            if pruned:
                steps = ", ".join(str(s) for s in pruned)
                self.log(
                    f"deleted checkpoint(s) of step {steps} (train.keep_last = {self.cfg.train.keep_last})"
                )
        acc.wait_for_everyone()

    def resume(self) -> None:
        """Continue from the latest complete checkpoint, if the run directory has one."""
        if self.accelerator.is_main_process:
            ckpt.remove_incomplete(self.run_dir)
        found = ckpt.list_checkpoints(self.run_dir)
        if not found:
            return
        step, path = found[-1]
        meta = json.loads((path / "meta.json").read_text())
        if ckpt.is_sharded(path):
            ckpt.load_state(path, self.accelerator.unwrap_model(self.model), self.optimizer)
        else:
            self._resume_full_state(path)
        trainer_state = torch.load(path / "trainer.pt", weights_only=False)
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        self.sampler.load_state_dict(json.loads((path / "sampler.json").read_text()))
        rng_file = path / f"rng_rank{self.rank}.pt"
        if rng_file.exists():  # absent when resuming with more processes than before
            ckpt.set_rng_state(torch.load(rng_file, weights_only=False))
        self.step, self.tokens_seen = step, meta["tokens_seen"]
        self.log(f"resumed from {ckpt.CHECKPOINTS_DIR}/{path.name} (step {step})")

    def _resume_full_state(self, path: Path) -> None:
        """A checkpoint from before the sharded format: full weights and optimizer state."""
        optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
        weights = ckpt.read_model_state(path, self.cfg.model.tie_embeddings)
        if self.ep > 1:
            expert_parallel.load_full_model_state(self.model, weights)
            expert_parallel.load_full_optimizer_state(self.model, self.optimizer, optim_state)
        elif self.sharded:
            from modelcore.parallel import load_full_model_state, load_full_optimizer_state

            load_full_model_state(self.model, weights)
            load_full_optimizer_state(self.model, self.optimizer, optim_state)
        else:
            ckpt.load_model_weights(self.accelerator.unwrap_model(self.model), path)
            self.optimizer.load_state_dict(optim_state)

    def sample(self) -> list[tuple[str, str]]:
        """The sample prompts' continuations now; every rank calls it (collectives: FSDP's
        forward, or gathering a tensor- or expert-parallel model whole)."""
        model = self.accelerator.unwrap_model(self.model)
        if self.tp > 1 or self.ep > 1:
            model = whole_model(model, self.mesh["ep"].get_group() if self.ep > 1 else None)
        return generate_samples(model, self.tokenizer, self.cfg.train, self.step)

    # --- the loop --------------------------------------------------------------

    def accumulate_gradients(self) -> StepStats:
        """Forward and backward over the step's micro-batches; the ranks agree on losses and stop."""
        cfg, acc = self.cfg, self.accelerator
        accum = cfg.train.grad_accum_steps
        totals = torch.zeros(4, device=self.device)  # loss, ce, aux, z summed over micro-steps
        load_sum = None
        self.model.train()
        for i, (x, y) in enumerate(self.sampler.next_step()):
            # Only the last micro-step synchronises gradients across ranks.
            last = i == accum - 1
            if self.fsdp:
                self.model.set_requires_gradient_sync(last)
            sync = nullcontext() if last or self.sharded else acc.no_sync(self.model)
            with sync:
                with self.forward_context():
                    out = self.model(x.to(self.device), y.to(self.device))
                acc.backward(out.loss / accum)
            totals += torch.stack(
                [out.loss.detach().float(), out.ce_loss.float(), out.aux_loss.float(), out.z_loss.float()]
            )
            if out.expert_load is not None:
                load_sum = out.expert_load if load_sum is None else load_sum + out.expert_load
        if self.ep > 1 and self.dp > 1 and not self.fsdp:
            # Expert parallel beside data parallel: DDP's averaging, done by hand (ranks at
            # one EP coordinate hold the same experts).
            expert_parallel.average_gradients(self.model, self.mesh["dp"].get_group())
        stop = self.stop.requested or self.faults.stops_after(self.step + 1)
        flag = torch.tensor([1.0 if stop else 0.0], device=self.device)
        parts = [totals / accum, flag]
        if load_sum is not None:
            parts.append(load_sum.flatten().float() / accum)
        reduced = acc.reduce(torch.cat(parts), reduction="sum")
        means = reduced[:4] / self.world
        load = None
        if load_sum is not None:
            load = (reduced[5:] / self.world).view_as(load_sum).cpu()
        loss, ce, aux, z = means.tolist()
        return StepStats(loss, ce, aux, z, stop=reduced[4].item() > 0, expert_load=load)

    def clip_gradients(self, max_norm: float) -> float:
        """Clip the global gradient norm; returns the norm before clipping."""
        if not self.sharded:
            return float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))
        if self.ep > 1:
            group = None if self.fsdp else self.mesh["ep"].get_group()  # FSDP: every rank's shards
            return expert_parallel.clip_grad_norm(self.model, max_norm, group)
        return clip_grad_norm(self.model.parameters(), max_norm)

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        total = torch.zeros(1, device=self.device)
        for x, y in self.val_batches:
            with self.forward_context():
                out = self.model(x.to(self.device), y.to(self.device))
            total += out.ce_loss.float()
        total = self.accelerator.reduce(total, reduction="sum")
        return total.item() / (len(self.val_batches) * self.world)

    def train_step(self) -> tuple[StepStats, float, float]:
        """One whole training step (forward, backward, clip, AdamW, schedule): stats, grad norm, lr used."""
        cfg, t = self.cfg, self.cfg.train
        stats = self.accumulate_gradients()
        if not math.isfinite(stats.loss):
            if t.nan_policy == "fail":
                raise FloatingPointError(
                    f"loss is {stats.loss} at step {self.step + 1}: training diverged. Lower "
                    "optim.lr, raise optim.warmup_steps or set train.nan_policy=skip"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.log(
                f"loss is {stats.loss} at step {self.step + 1}; step skipped (train.nan_policy=skip)",
                "warning",
            )
            grad_norm = float("nan")
        else:
            clip = cfg.optim.grad_clip if cfg.optim.grad_clip > 0 else float("inf")
            grad_norm = self.clip_gradients(clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        lr = self.scheduler.get_last_lr()[0]
        self.scheduler.step()
        return stats, grad_norm, lr

    def run(self) -> str:
        """Train to max_steps; returns "completed" or "cancelled"."""
        cfg, t = self.cfg, self.cfg.train
        self.resume()
        if self.events is not None:
            self.events.status("running", info=self.describe())
        self.log(
            f"model: {cfg.model.num_params():,} parameters, {self.world} process(es) on "
            f"{self.device.type} ({self.parallel_mode}), {self.tokens_per_step:,} tokens/step"
        )
        peak = device_peak_flops(self.device, cfg.parallel.mixed_precision)
        flops_per_token = cfg.model.flops_per_token(cfg.data.seq_len)
        window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
        while self.step < t.max_steps:
            self.faults.before_step(self.step + 1, self.rank == self.world - 1, self.stop)
            try:
                stats, grad_norm, lr = self.train_step()
            except RuntimeError as exc:
                message = str(exc).lower()
                if self.world > 1 and ("timed out" in message or "timeout" in message):
                    raise RuntimeError(
                        f"a rank did not reach the end of step {self.step + 1} within "
                        f"train.rank_timeout_s ({t.rank_timeout_s} s): a process is stuck or died"
                    ) from exc
                raise
            self.step += 1
            self.tokens_seen += self.tokens_per_step
            window_tokens += self.tokens_per_step
            window_steps += 1

            if self.step % t.log_every == 0 or self.step == t.max_steps:
                elapsed = time.perf_counter() - window_start
                values = {
                    "train/loss": stats.ce_loss,
                    "train/lr": lr,
                    "train/grad_norm": grad_norm,
                    "perf/tokens_per_s": window_tokens / elapsed,
                    "perf/step_time_s": elapsed / window_steps,
                    "perf/mem_gb": memory_gb(self.device),
                    "perf/tokens_seen": self.tokens_seen,
                }
                if peak:
                    values["perf/mfu"] = flops_per_token * window_tokens / elapsed / (peak * self.world)
                if stats.expert_load is not None:
                    values["moe/aux_loss"] = stats.aux_loss
                    values["moe/z_loss"] = stats.z_loss
                    for layer, row in enumerate(stats.expert_load.tolist()):
                        for expert, share in enumerate(row):
                            values[f"moe/expert_util/layer{layer}/expert{expert}"] = share
                system = self.system_metrics.collect()  # a collective: every rank, at every logging step
                if self.events is not None:
                    self.events.metric(self.step, values)
                    if system:
                        self.events.system(system)
                window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
            side_work_start = time.perf_counter()
            if self.val_batches and (self.step % t.eval_every == 0 or self.step == t.max_steps):
                val = self.evaluate()
                if self.events is not None:
                    self.events.metric(self.step, {"val/loss": val, "val/ppl": math.exp(min(val, 50.0))})
            if sample_due(self.step, t):
                samples = self.sample()
                if self.events is not None:
                    self.events.sample(self.step, samples)
            if stats.stop and self.step < t.max_steps:
                # The run page shows this line while the (possibly long) save runs: the
                # supervisor waits for it up to train.cancel_grace_s before it kills.
                self.log(f"stop requested: saving checkpoint at step {self.step} before stopping")
                self.save_checkpoint()
                self.log(f"checkpoint of step {self.step} saved; stopping")
                return "cancelled"
            if t.checkpoint_every and self.step % t.checkpoint_every == 0:
                self.save_checkpoint()
            # Throughput counts training steps only, not evaluations and checkpoints.
            window_start += time.perf_counter() - side_work_start
        self.save_checkpoint()
        return "completed"
