"""The training loop, run by every rank under Accelerate (DDP or FSDP).

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
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Protocol

import torch
from accelerate import Accelerator
from accelerate.utils import InitProcessGroupKwargs, set_seed
from safetensors.torch import save_file

from modelcore import checkpoint as ckpt
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
from modelcore.sampling import generate_samples, sample_due
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
    def __init__(self, cfg: RunConfig, run_dir: Path, events: EventWriter | None, stop: StopFlag):
        self.cfg, self.run_dir, self.events, self.stop = cfg, run_dir, events, stop
        p, t = cfg.parallel, cfg.train
        self.accelerator = Accelerator(
            cpu=p.device == "cpu",
            mixed_precision=p.mixed_precision,
            kwargs_handlers=[InitProcessGroupKwargs(timeout=timedelta(seconds=t.rank_timeout_s))],
        )
        acc = self.accelerator
        self.device = acc.device
        self.rank, self.world = acc.process_index, acc.num_processes
        # One process has nothing to shard: FSDP then is plain single-process training.
        self.fsdp = p.strategy == "fsdp" and self.world > 1
        if self.world != p.num_processes:
            self.log(
                f"parallel.num_processes is {p.num_processes} but {self.world} processes "
                "were launched; the global batch follows the launched count",
                "warning",
            )
        set_seed(t.seed)
        if self.device.type == "cpu":
            # Deterministic CPU runs: resume and DDP-equality tests compare losses exactly.
            torch.use_deterministic_algorithms(True, warn_only=True)
            # Deterministic mode also fills every new tensor with NaN, a debugging aid for reads of
            # uninitialised memory; it changes no result and costs ~1% of a CPU step.
            torch.utils.deterministic.fill_uninitialized_memory = False

        # Data: rank 0 builds the tokenizer and token file; the others wait for the files
        # rather than in a barrier, whose timeout a long first tokenization would exceed.
        cache = Path(os.environ.get(CACHE_DIR_ENV) or run_dir / "data")
        if acc.is_main_process:
            self.tokenizer = prepare_tokenizer(cfg.data, run_dir)
            token_file = tokenize_corpus(
                cfg.data, self.tokenizer, run_dir / "tokenizer", cache, progress=self._data_progress
            )
        else:
            self.tokenizer, token_file = wait_for_token_file(cfg.data, run_dir, cache, lambda: stop.requested)
        if self.tokenizer.vocab_size > cfg.model.vocab_size:
            raise ValueError(
                f"model.vocab_size ({cfg.model.vocab_size}) is smaller than the "
                f"tokenizer's vocabulary ({self.tokenizer.vocab_size})"
            )
        self.splits = TokenSplits.open(token_file, cfg.data.val_fraction, cfg.data.seq_len)
        self.sampler = WindowSampler(
            self.splits.train,
            cfg.data.seq_len,
            t.micro_batch_size,
            t.grad_accum_steps,
            t.seed,
            self.rank,
            self.world,
        )

        model_cfg = cfg.model
        if model_cfg.kernels == "triton" and self.device.type != "cuda":
            self.log("model.kernels=triton needs CUDA; using the plain PyTorch kernels", "warning")
            model_cfg = type(model_cfg)(**{**model_cfg.__dict__, "kernels": "torch"})
        model = Transformer(model_cfg)
        model.activation_checkpointing = p.activation_checkpointing
        if t.init_from and not ckpt.list_checkpoints(run_dir):  # a resume restores its own weights
            from modelcore.init_from import load_initial_weights

            load_initial_weights(model, t.init_from, cfg)
            self.log(f"initialised weights from {t.init_from}")
        if p.compile:
            if self.fsdp:
                # FSDP shards block by block: compile the same units (torchtitan does too).
                for layer in model.layers:
                    layer.compile()
            else:
                # The whole model, in place (state-dict names unchanged): norms, rotary,
                # SwiGLU, residual adds and the loss fuse across block boundaries.
                model.compile()
        if self.fsdp:
            from modelcore.parallel import apply_fsdp

            model = apply_fsdp(model.to(self.device), self.device, self.world, p.mixed_precision)
        optimizer = torch.optim.AdamW(
            self._param_groups(model),
            lr=cfg.optim.lr,
            betas=(cfg.optim.beta1, cfg.optim.beta2),
            eps=cfg.optim.eps,
            # Fused AdamW runs on CUDA and (torch >= 2.4) CPU tensors, not on FSDP's DTensors on CPU.
            fused=self.device.type == "cuda" or (not self.fsdp and _cpu_fused_adamw()) or None,
        )
        if self.fsdp:
            # Sharded already; Accelerate would wrap the model in DDP on top.
            self.model, self.optimizer = model, optimizer
        else:
            self.model, self.optimizer = acc.prepare(model, optimizer)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_multiplier(s, cfg))
        self.step = 0
        self.tokens_seen = 0
        self.system_metrics = SystemMetrics(
            cfg.train.system_metrics_every_s, self.device, self.rank, self.world
        )
        self.val_batches = (
            validation_batches(
                self.splits.val,
                cfg.data.seq_len,
                t.micro_batch_size,
                t.eval_batches,
                t.seed,
                self.rank,
                self.world,
            )
            if cfg.data.val_fraction > 0 and t.eval_every
            else []
        )

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
        }

    @property
    def parallel_mode(self) -> str:
        return "fsdp" if self.fsdp else ("ddp" if self.world > 1 else "single")

    @property
    def tokens_per_step(self) -> int:
        t = self.cfg.train
        return self.cfg.data.seq_len * t.micro_batch_size * t.grad_accum_steps * self.world

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
        if self.fsdp:
            from modelcore.parallel import full_model_state, full_optimizer_state

            # Collectives: every rank takes part, rank 0 receives the full tensors.
            state = full_model_state(self.model)
            optim_state = full_optimizer_state(self.model, self.optimizer)
        else:
            state = acc.get_state_dict(self.model)
            optim_state = self.optimizer.state_dict()
        if acc.is_main_process:
            save_file(
                ckpt.model_state_for_save(state, self.cfg.model.tie_embeddings),
                str(tmp / "model.safetensors"),
            )
            torch.save({"scheduler": self.scheduler.state_dict(), "step": self.step}, tmp / "trainer.pt")
            ckpt.write_json(tmp / "sampler.json", self.sampler.state_dict())
            (tmp / "config.json").write_text(self.cfg.to_json())
            self.tokenizer.save(tmp / "tokenizer")
            torch.save(optim_state, tmp / "optimizer.pt")
        torch.save(ckpt.rng_state(), tmp / f"rng_rank{self.rank}.pt")
        acc.wait_for_everyone()
        if acc.is_main_process:
            ckpt.write_json(
                tmp / "meta.json",
                {
                    "step": self.step,
                    "tokens_seen": self.tokens_seen,
                    "world_size": self.world,
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
        optim_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=False)
        if self.fsdp:
            from modelcore.parallel import load_full_model_state, load_full_optimizer_state

            load_full_model_state(self.model, ckpt.read_model_state(path, self.cfg.model.tie_embeddings))
            load_full_optimizer_state(self.model, self.optimizer, optim_state)
        else:
            ckpt.load_model_weights(self.accelerator.unwrap_model(self.model), path)
            self.optimizer.load_state_dict(optim_state)
        trainer_state = torch.load(path / "trainer.pt", weights_only=False)
        self.scheduler.load_state_dict(trainer_state["scheduler"])
        self.sampler.load_state_dict(json.loads((path / "sampler.json").read_text()))
        rng_file = path / f"rng_rank{self.rank}.pt"
        if rng_file.exists():  # absent when resuming with more processes than before
            ckpt.set_rng_state(torch.load(rng_file, weights_only=False))
        self.step, self.tokens_seen = step, meta["tokens_seen"]
        self.log(f"resumed from {ckpt.CHECKPOINTS_DIR}/{path.name} (step {step})")

    # --- the loop --------------------------------------------------------------

    def train_step(self) -> StepStats:
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
            sync = nullcontext() if last or self.fsdp else acc.no_sync(self.model)
            with sync:
                out = self.model(x.to(self.device), y.to(self.device))
                acc.backward(out.loss / accum)
            totals += torch.stack(
                [out.loss.detach().float(), out.ce_loss.float(), out.aux_loss.float(), out.z_loss.float()]
            )
            if out.expert_load is not None:
                load_sum = out.expert_load if load_sum is None else load_sum + out.expert_load
        stop_at = int(os.environ.get(STOP_AT_STEP_ENV, "0") or 0)
        stop = self.stop.requested or (stop_at > 0 and self.step + 1 >= stop_at)
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
        if not self.fsdp:
            return float(self.accelerator.clip_grad_norm_(self.model.parameters(), max_norm))
        norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm)
        return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)

    @torch.no_grad()
    def evaluate(self) -> float:
        self.model.eval()
        total = torch.zeros(1, device=self.device)
        for x, y in self.val_batches:
            out = self.model(x.to(self.device), y.to(self.device))
            total += out.ce_loss.float()
        total = self.accelerator.reduce(total, reduction="sum")
        return total.item() / (len(self.val_batches) * self.world)

    def optimizer_step(self) -> tuple[StepStats, float, float]:
        """One optimizer step (forward, backward, clip, AdamW, schedule): stats, grad norm, lr used."""
        cfg, t = self.cfg, self.cfg.train
        stats = self.train_step()
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

    def _hang(self) -> None:
        """Stop taking part in collectives (the rank-timeout test); leave only when signalled."""
        self.log(f"{HANG_AT_STEP_ENV}: rank {self.rank} hangs", "warning")
        while not self.stop.requested:
            time.sleep(0.1)
        raise RuntimeError("hung rank signalled to stop")

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
        fail_at = int(os.environ.get(FAIL_AT_STEP_ENV, "0") or 0)
        hang_at = int(os.environ.get(HANG_AT_STEP_ENV, "0") or 0)
        peak = device_peak_flops(self.device, cfg.parallel.mixed_precision)
        flops_per_token = cfg.model.flops_per_token(cfg.data.seq_len)
        window_start, window_tokens, window_steps = time.perf_counter(), 0, 0
        while self.step < t.max_steps:
            if fail_at and self.step + 1 == fail_at:
                raise RuntimeError(f"injected failure at step {fail_at} ({FAIL_AT_STEP_ENV} is set)")
            if hang_at and self.step + 1 == hang_at and self.rank == self.world - 1:
                self._hang()
            try:
                stats, grad_norm, lr = self.optimizer_step()
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
            if sample_due(self.step, t):  # every rank generates: a sharded model's forward is a collective
                samples = generate_samples(
                    self.accelerator.unwrap_model(self.model), self.tokenizer, t, self.step
                )
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
