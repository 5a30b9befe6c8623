"""Training tokens/s of Runwright's trainer vs a plain Hugging Face Llama training loop.

    python -m benchmarks.train_throughput [--rounds 5] [--steps 3] [--variants eager,compile] [--threads 1]

Same model shape (Llama, d_model 256, 4 layers, 4 heads, sequence 256, vocabulary
4096, tied embeddings, fp32), same data (the built-in corpus tokenized by a 4096-token
BPE, the same random windows), same optimizer (AdamW with the same groups and the same
implementation, fused where ours is fused, clipping at 1.0, constant learning rate),
one process on the CPU. Ours is the real trainer step (``Trainer.train_step``:
sampler, model, kernels, clipping, AdamW); the peer is ``transformers.LlamaForCausalLM``
(``attn_implementation="sdpa"``) in a plain loop. The sides are interleaved, a few steps
each per round, so machine noise hits them alike; each side's figure is its median over
rounds, after a warm-up round that also absorbs compilation and the matmul route
measurement. Both sides use the same torch thread count (``--threads``); the peer runs
without the deterministic mode our trainer sets for its process, as a plain loop would.

The headline is fixed in advance, whatever the results: ``ours`` and ``ratio`` are the
variant that the new-run form's defaults give a user (``DEFAULT_VARIANT``: no
torch.compile, the plain PyTorch kernels, each float32 matmul on the route measured
fastest for its shape). The other variants are listed under ``variants``:
``eager-onednn`` and ``eager-blas`` force every matmul onto oneDNN or onto torch's BLAS
(``modelcore.kernels.cpu_gemm``), ``compile*`` switch torch.compile on. Prints one JSON
object: ``ours``, ``peer``, ``ratio`` = ours/peer (the median of the per-round ratios,
listed in ``round_ratios``), ``unit``, every variant, the settings, the optimizer each
side ran, the matmul routes taken, and the same ratios by process CPU time
(``ratio_cpu_time``), which a busy shared machine disturbs less. ``ratio_ceiling`` is
1 / (the share of the peer's step spent in matmuls and attention): with the same FLOPs
at the same speed, no trainer can beat the peer by more; only faster matmuls (oneDNN,
where this CPU runs it faster) go past it.

On a CUDA machine it also trains a 125M-parameter config in bf16 and reports its MFU.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from modelcore.config import ModelConfig, ParallelConfig, RunConfig
from modelcore.data import WindowSampler
from modelcore.kernels import cpu_gemm
from modelcore.kernels.matmul_routes import cpu_model
from modelcore.trainer import Trainer

VARIANTS = {
    # name: (parallel.compile, model.kernels, float32 matmul route: measured, or forced)
    "eager": (False, "torch", "measure"),
    "compile": (True, "torch", "measure"),  # torch.compile of the whole model, loss included
    "compile-kernels": (False, "compile", "measure"),  # only the fused ops compiled, one by one
    "compile-all": (True, "compile", "measure"),
    # Every product on one route: how much each route alone gives (the measured route takes
    # the faster per product, so "eager" should match or beat both).
    "eager-onednn": (False, "torch", "onednn"),
    "eager-blas": (False, "torch", "blas"),
}


def default_variant() -> str:
    """The variant a user gets from the new-run form's defaults (the config dataclasses' defaults)."""
    wanted = (ParallelConfig().compile, ModelConfig().kernels, "measure")
    return next(name for name, settings in VARIANTS.items() if settings == wanted)


DEFAULT_VARIANT = default_variant()


def optimizer_implementation(optimizer: torch.optim.Optimizer) -> dict[str, bool | None]:
    """Which AdamW code an optimizer runs: ``fused`` and ``foreach`` as it was built with."""
    inner = getattr(optimizer, "optimizer", optimizer)  # under Accelerate's AcceleratedOptimizer
    return {"fused": inner.defaults.get("fused"), "foreach": inner.defaults.get("foreach")}


class _NoStop:
    requested = False


def bench_config(variant: str, d_model: int, layers: int, seq: int, vocab: int, batch: int) -> RunConfig:
    compile_model, kernels, _ = VARIANTS[variant]
    return RunConfig.from_dict(
        {
            "model": {
                "vocab_size": vocab,
                "d_model": d_model,
                "n_layers": layers,
                "n_heads": d_model // 64,
                "max_seq_len": seq,
                "kernels": kernels,
                "tie_embeddings": True,
            },
            "data": {"tokenizer": "bpe", "bpe_vocab_size": vocab, "seq_len": seq, "max_corpus_mb": 1.0},
            "optim": {"lr": 1e-3, "schedule": "constant", "warmup_steps": 0, "grad_clip": 1.0},
            "parallel": {"num_processes": 1, "compile": compile_model},
            "train": {"micro_batch_size": batch, "max_steps": 100_000, "eval_every": 0},
        }
    )


class HFSide:
    """transformers' LlamaForCausalLM with the same shape, optimizer and windows.

    ``adamw`` is our trainer's AdamW implementation (``fused``/``foreach``): a plain loop
    left on torch's CPU default would run the slower single-tensor AdamW.
    """

    def __init__(self, cfg: RunConfig, tokens: Any, adamw: dict[str, bool | None]):
        import transformers

        m = cfg.model
        hf_cfg = transformers.LlamaConfig(
            vocab_size=m.vocab_size,
            hidden_size=m.d_model,
            intermediate_size=m.ffn_hidden,
            num_hidden_layers=m.n_layers,
            num_attention_heads=m.n_heads,
            num_key_value_heads=m.kv_heads,
            max_position_embeddings=m.max_seq_len,
            rms_norm_eps=m.norm_eps,
            tie_word_embeddings=True,
            rope_theta=m.rope_theta,
            attn_implementation="sdpa",
        )
        torch.manual_seed(cfg.train.seed)
        self.model = transformers.LlamaForCausalLM(hf_cfg)
        self.model.train()
        o = cfg.optim
        decay = [p for p in self.model.parameters() if p.dim() >= 2]
        no_decay = [p for p in self.model.parameters() if p.dim() < 2]
        self.optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": o.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=o.lr,
            betas=(o.beta1, o.beta2),
            eps=o.eps,
            **adamw,
        )
        t = cfg.train
        self.sampler = WindowSampler(tokens, cfg.data.seq_len, t.micro_batch_size, 1, t.seed)
        self.clip = o.grad_clip

    def step(self) -> float:
        # A plain HF loop runs without the deterministic mode our Trainer turns on for the
        # whole process; it would cost the peer time it does not spend in real use.
        deterministic = torch.are_deterministic_algorithms_enabled()
        torch.use_deterministic_algorithms(False)
        try:
            ((x, y),) = self.sampler.next_step()
            # Labels are the inputs; transformers shifts them, as every HF training loop does.
            loss = self.model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            return loss.item()
        finally:
            torch.use_deterministic_algorithms(deterministic, warn_only=True)


def _timed(step: Any, steps: int, tokens_per_step: int) -> tuple[float, float, float]:
    """Tokens/s by the wall clock and by this process's CPU time, and the last loss."""
    start, start_cpu = time.perf_counter(), time.process_time()
    loss = 0.0
    for _ in range(steps):
        loss = step()
    cpu = time.process_time() - start_cpu
    return tokens_per_step * steps / (time.perf_counter() - start), tokens_per_step * steps / cpu, loss


def _trainer_step(trainer: Trainer, route: str) -> Any:
    def step() -> float:
        with cpu_gemm.forced_route(route):
            return trainer.train_step()[0].ce_loss

    return step


# The ops that do the model's FLOPs: the same shapes, hence about the same time, on both sides.
_DENSE_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "mkldnn::_linear_pointwise")
_ATTENTION_OPS = (
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
)


def dense_share(step: Any) -> float:
    """Share of one step's CPU time spent in matmuls and attention kernels (torch.profiler).

    ``1 / (the peer's share)`` bounds how far ahead of the peer a trainer can get by cutting
    everything else while running the same matmuls at the peer's speed; beyond it, only
    faster matmuls help (oneDNN's, where this CPU runs them faster).
    """
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        step()
        wall = time.perf_counter() - start
    dense = sum(e.self_cpu_time_total for e in prof.key_averages() if e.key in _DENSE_OPS + _ATTENTION_OPS)
    return dense / 1e6 / wall


def cpu_comparison(args: argparse.Namespace) -> dict[str, Any]:
    if args.threads:
        torch.set_num_threads(args.threads)
    run_root = Path(tempfile.mkdtemp(prefix="rw-bench-"))
    trainers: dict[str, Trainer] = {}
    for variant in args.variants:
        cfg = bench_config(variant, args.d_model, args.layers, args.seq, args.vocab, args.batch)
        # One run dir: the tokenizer and token file are built once and shared.
        trainers[variant] = Trainer(cfg, run_root, None, _NoStop())
    ours_name = DEFAULT_VARIANT
    first = trainers[ours_name]
    adamw = optimizer_implementation(first.optimizer)
    peer = HFSide(first.cfg, first.splits.train, adamw)
    tokens_per_step = args.batch * args.seq
    sides: dict[str, Any] = {name: _trainer_step(t, VARIANTS[name][2]) for name, t in trainers.items()}
    sides["peer"] = peer.step
    rates: dict[str, list[float]] = {name: [] for name in sides}
    cpu_rates: dict[str, list[float]] = {name: [] for name in sides}
    losses: dict[str, float] = {}
    order = list(sides)
    for round_ in range(args.rounds + 1):
        # Alternate the order each round so a trend in machine load favours no side.
        for name in order if round_ % 2 else reversed(order):
            rate, cpu_rate, losses[name] = _timed(sides[name], args.steps, tokens_per_step)
            if round_ > 0:  # round 0 warms up (and compiles)
                rates[name].append(rate)
                cpu_rates[name].append(cpu_rate)
    medians = {name: statistics.median(r) for name, r in rates.items()}
    # Each round's ratio compares runs made seconds apart; their median resists load swings
    # better than a ratio of medians.
    round_ratios = {
        n: [a / b for a, b in zip(r, rates["peer"], strict=True)] for n, r in rates.items() if n != "peer"
    }
    paired = {n: statistics.median(r) for n, r in round_ratios.items()}
    # By CPU time, time the process spent waiting for a core busy with other work does not
    # count: a cross-check of the wall-clock figures on a shared machine (with one thread
    # per side, wall and CPU time agree on a quiet one).
    cpu_paired = {
        n: statistics.median(a / b for a, b in zip(r, cpu_rates["peer"], strict=True))
        for n, r in cpu_rates.items()
        if n != "peer"
    }
    shares = {name: dense_share(sides[name]) for name in (ours_name, "peer")}
    return {
        "benchmark": "train_throughput",
        "unit": "tokens/s",
        "ours": round(medians[ours_name], 1),
        "ours_variant": ours_name,
        "ours_variant_note": "fixed in advance: what the new-run form's defaults give (parallel.compile="
        f"{VARIANTS[ours_name][0]}, model.kernels={VARIANTS[ours_name][1]}, matmul routes measured per "
        "shape); every variant is listed under variants",
        "peer": round(medians["peer"], 1),
        "peer_name": "transformers.LlamaForCausalLM (sdpa) plain loop",
        "ratio": round(paired[ours_name], 3),
        "ratio_note": "median over rounds of (ours / peer) measured back to back",
        "ratio_cpu_time": round(cpu_paired[ours_name], 3),
        "optimizer": {
            "ours": {"name": "torch.optim.AdamW", **adamw},
            "peer": {"name": "torch.optim.AdamW", **optimizer_implementation(peer.optimizer)},
        },
        "variants": {
            n: {
                "tokens_per_s": round(v, 1),
                "ratio": round(paired[n], 3),
                "ratio_cpu_time": round(cpu_paired[n], 3),
                "compile_model": VARIANTS[n][0],
                "kernels": VARIANTS[n][1],
                "matmul_route": VARIANTS[n][2],
            }
            for n, v in medians.items()
            if n != "peer"
        },
        "samples": {n: [round(x, 1) for x in r] for n, r in rates.items()},
        "round_ratios": {n: [round(x, 3) for x in r] for n, r in round_ratios.items()},
        "last_loss": losses,
        "target_ratio": 1.3,
        "matmul_attention_share": {n: round(v, 3) for n, v in shares.items()},
        "ratio_ceiling": round(1 / shares["peer"], 3),
        "ratio_ceiling_note": "1 / (share of the peer's step in matmuls and attention, one profiled "
        "step): the ratio if ours ran them at the peer's speed and spent no time on anything else; "
        "only matmuls faster than the peer's (oneDNN's, where measured faster) pass it",
        "matmul_routes": {
            "cpu": cpu_model(),
            "note": "route per product bucket (threads, m x n x k rounded up to powers of two, operand "
            "layouts), timed once per machine and torch version; medians in µs",
            "decisions": cpu_gemm.route_table(),
        },
        "settings": {
            "d_model": args.d_model,
            "n_layers": args.layers,
            "n_heads": args.d_model // 64,
            "seq_len": args.seq,
            "vocab_size": args.vocab,
            "micro_batch": args.batch,
            "dtype": "float32",
            "device": "cpu",
            "processes": 1,
            "threads": torch.get_num_threads(),  # the same for both sides
            "interop_threads": torch.get_num_interop_threads(),
            "peer_deterministic_algorithms": False,
            "num_params": first.cfg.model.num_params(),
            "rounds": args.rounds,
            "steps_per_round": args.steps,
            "torch": torch.__version__,
        },
    }


def gpu_mfu(steps: int = 30) -> dict[str, Any]:
    """MFU of the trainer on a 125M-parameter config (GPT-2 small shape) in bf16."""
    cfg = RunConfig.from_dict(
        {
            "model": {
                "vocab_size": 32768,
                "d_model": 768,
                "n_layers": 12,
                "n_heads": 12,
                "max_seq_len": 1024,
                "kernels": "triton",
            },
            "data": {"tokenizer": "byte", "seq_len": 1024, "max_corpus_mb": 8.0},
            "optim": {"schedule": "constant", "warmup_steps": 0},
            "parallel": {"num_processes": 1, "mixed_precision": "bf16", "compile": True},
            "train": {"micro_batch_size": 16, "max_steps": 100_000, "eval_every": 0},
        }
    )
    from modelcore.trainer import device_peak_flops

    trainer = Trainer(cfg, Path(tempfile.mkdtemp(prefix="rw-bench-gpu-")), None, _NoStop())
    for _ in range(5):
        trainer.train_step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step()
    torch.cuda.synchronize()
    tokens_per_s = trainer.tokens_per_step * steps / (time.perf_counter() - start)
    peak = device_peak_flops(trainer.device, "bf16")
    flops = cfg.model.flops_per_token(cfg.data.seq_len) * tokens_per_s
    return {
        "gpu": torch.cuda.get_device_name(),
        "num_params": cfg.model.num_params(),
        "tokens_per_s": round(tokens_per_s, 1),
        "mfu": round(flops / peak, 4) if peak else None,
        "target_mfu": 0.5,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_throughput")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=2, help="Steps per side per round.")
    parser.add_argument(
        "--variants",
        default="eager,compile,eager-onednn,eager-blas",
        type=lambda s: [v for v in s.split(",") if v],
        help=f"Our settings to measure, from {', '.join(VARIANTS)}; {DEFAULT_VARIANT} (the headline) "
        "is always measured.",
    )
    parser.add_argument("--d-model", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--seq", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for both sides (0: torch's default, one per core). On a shared machine 1 "
        "gives steadier timings: a busy core stalls every multi-threaded matmul.",
    )
    parser.add_argument("--skip-gpu", action="store_true")
    parser.add_argument(
        "--gpu-only", action="store_true", help="only the GPU MFU section (scripts/gpu_check.sh); needs CUDA"
    )
    args = parser.parse_args(argv)
    if args.gpu_only:
        if not torch.cuda.is_available():
            parser.error("--gpu-only: torch sees no CUDA GPU here")
        json.dump(gpu_mfu(), sys.stdout)
        print()
        return 0
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        parser.error(f"unknown variants {sorted(unknown)}")
    if DEFAULT_VARIANT not in args.variants:
        args.variants.insert(0, DEFAULT_VARIANT)  # the headline is always measured
    gpu = None
    if torch.cuda.is_available() and not args.skip_gpu:
        # A child process: Accelerate's device choice is per process, and the CPU
        # comparison below must stay on the CPU.
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.train_throughput", "--gpu-only"],
            capture_output=True,
            text=True,
            check=True,
        )
        gpu = json.loads(done.stdout.strip().splitlines()[-1])
    os.environ["ACCELERATE_USE_CPU"] = "1"
    result = cpu_comparison(args)
    if gpu is not None:
        result["gpu_mfu"] = gpu
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
