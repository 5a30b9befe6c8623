"""Fused kernels benchmark: ``python -m benchmarks.kernels`` prints one JSON object.

``ce_peak_memory`` (CPU, unless ``--gpu-only``): peak memory of loss + backward for 8192 tokens, hidden
512, vocab 32000, float32: ours (``fused_linear_cross_entropy``, chunked) against the
peer ``F.cross_entropy(x @ W.T)``. Each side runs in a fresh child process; its peak is
the process's resident high-water mark (VmHWM, reset just before the run) after the run
minus its resident set just before it (imports done, inputs allocated and touched, libraries warmed up), so
both sides pay the same fixed costs and only the loss's own memory is compared. The
children save loss and gradients, and the parent checks they agree.

``gpu`` (only when CUDA is available; ``--gpu-only`` leaves out the CPU part): forward + backward time of each op under eager
PyTorch, torch.compile and Triton, CUDA peak memory of the two losses in bf16, and
training tokens/s of the gpt2-small preset (about 124M parameters) with each kernels mode.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from modelcore import kernels

TOKENS, HIDDEN, VOCAB = 8192, 512, 32000


def _ce_inputs(tokens: int, hidden: int, vocab: int, device: str = "cpu", dtype: torch.dtype = torch.float32):
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(tokens, hidden, generator=gen)
    w = torch.randn(vocab, hidden, generator=gen) * hidden**-0.5
    t = torch.randint(0, vocab, (tokens,), generator=gen)
    t[torch.rand(tokens, generator=gen) < 0.05] = -100  # some padding, as real batches have
    return (
        h.to(device, dtype).requires_grad_(),
        w.to(device, dtype).requires_grad_(),
        t.to(device),
    )


def _peer_loss(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((h @ w.t()).float(), t, ignore_index=-100)


def _ours_loss(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor, backend: str = "torch") -> torch.Tensor:
    return kernels.fused_linear_cross_entropy(h, w, t, ignore_index=-100, backend=backend)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak_rss() -> None:
    # Writing 5 to clear_refs resets VmHWM (the resident high-water mark) to the current
    # RSS, so the peak read afterwards belongs to the measured code alone and not to the
    # input set-up before it (ru_maxrss cannot be reset).
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _ce_child(side: str, out: Path) -> None:
    """One side of the CPU memory comparison, in a process of its own."""
    loss_fn = _ours_loss if side == "ours" else _peer_loss
    # Warm up the same code path at a small size so one-time library allocations
    # (thread pools, BLAS workspaces) fall before the baseline.
    small = _ce_inputs(64, HIDDEN, 1000)
    loss_fn(*small).backward()
    h, w, t = _ce_inputs(TOKENS, HIDDEN, VOCAB)
    _reset_peak_rss()
    baseline_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    loss = loss_fn(h, w, t)
    loss.backward()
    seconds = time.perf_counter() - start
    peak_kb = _status_kb("VmHWM")
    torch.save({"loss": loss.detach(), "grad_hidden": h.grad, "grad_weight": w.grad}, out / f"{side}.pt")
    info = {
        "peak_delta_mb": (peak_kb - baseline_kb) / 1024,
        "baseline_rss_mb": baseline_kb / 1024,
        "seconds": seconds,
    }
    (out / f"{side}.json").write_text(json.dumps(info))


def _run_ce_sides(extra_env: dict[str, str]) -> tuple[dict, dict, dict]:
    """Both sides in fresh child processes; returns (peaks and times, ours' tensors, peer's tensors)."""
    with tempfile.TemporaryDirectory(prefix="bench-kernels-") as tmp:
        out = Path(tmp)
        sides = {}
        for side in ("ours", "peer"):
            subprocess.run(
                [sys.executable, "-m", "benchmarks.kernels", "--ce-child", side, "--out", tmp],
                check=True,
                env={**os.environ, "TRITON_INTERPRET": "0", **extra_env},
            )
            sides[side] = json.loads((out / f"{side}.json").read_text())
        return sides, torch.load(out / "ours.pt"), torch.load(out / "peer.pt")


def _peaks(sides: dict) -> dict:
    ours, peer = sides["ours"]["peak_delta_mb"], sides["peer"]["peak_delta_mb"]
    return {"ours": round(ours, 1), "peer": round(peer, 1), "ratio": round(peer / ours, 2)}


def ce_peak_memory() -> dict:
    sides, ours, peer = _run_ce_sides({})
    diffs = {k: float((ours[k].float() - peer[k].float()).abs().max()) for k in ours}
    # Same tolerances as the CPU tests (float32 sums in a different order).
    equal = all(torch.allclose(ours[k].float(), peer[k].float(), atol=1e-6, rtol=1e-5) for k in ours)
    # glibc's malloc keeps freed blocks of up to 32 MiB in its heap once it has seen one, so
    # with default settings resident memory also counts freed chunk buffers. With a fixed
    # mmap threshold every large tensor is returned to the OS when freed, and the resident
    # peak follows the live tensors; both are reported, the default one is the headline.
    fixed, _, _ = _run_ce_sides({"MALLOC_MMAP_THRESHOLD_": "131072"})
    return {
        "shape": {"tokens": TOKENS, "hidden": HIDDEN, "vocab": VOCAB, "dtype": "float32", "device": "cpu"},
        **_peaks(sides),
        "unit": "MiB",
        "method": "fresh process per side; VmHWM (reset just before) after loss+backward minus VmRSS "
        "before it; default malloc",
        "malloc_mmap_threshold_128k": _peaks(fixed),
        "full_logits_mib": round(TOKENS * VOCAB * 4 / 2**20, 1),
        "seconds": {"ours": round(sides["ours"]["seconds"], 3), "peer": round(sides["peer"]["seconds"], 3)},
        "same_loss_and_grads": equal,
        "max_abs_diff": diffs,
        "loss": float(ours["loss"]),
    }


# --------------------------------------------------------------------------- GPU


def _cuda_time_ms(fn, warmup: int = 3, iters: int = 20) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def _op_cases() -> dict:
    dev, bf16 = "cuda", torch.bfloat16

    def leaf(*shape):
        return torch.randn(*shape, device=dev, dtype=bf16, requires_grad=True)

    x, w = leaf(8 * 1024, 2048), leaf(2048)
    g, u = leaf(8 * 1024, 5632), leaf(8 * 1024, 5632)
    q, k = leaf(8, 1024, 16, 128), leaf(8, 1024, 4, 128)
    ang = torch.randn(1024, 64, device=dev)
    cos, sin = ang.cos(), ang.sin()
    h, wv, t = _ce_inputs(8192, 2048, 32000, "cuda", bf16)

    def fwd_bwd(out):
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])

    return {
        "rms_norm (8192x2048)": lambda b: fwd_bwd(kernels.rms_norm(x, w, 1e-5, backend=b)),
        "swiglu (8192x5632)": lambda b: fwd_bwd(kernels.swiglu(g, u, backend=b)),
        "apply_rotary (8x1024, 16q/4kv heads x128)": lambda b: fwd_bwd(
            kernels.apply_rotary(q, k, cos, sin, backend=b)
        ),
        "fused_linear_cross_entropy (8192x2048, vocab 32000)": lambda b: fwd_bwd(_ours_loss(h, wv, t, b)),
    }


def _gpu_op_times() -> dict:
    results = {}
    for name, run in _op_cases().items():
        row = {}
        for backend in kernels.BACKENDS:
            try:
                row[f"{backend}_ms"] = round(_cuda_time_ms(lambda run=run, b=backend: run(b)), 3)
            except Exception as exc:  # a failing backend is reported, the others still run
                row[f"{backend}_ms"] = f"error: {type(exc).__name__}: {exc}"
        results[name] = row
    h, wv, t = _ce_inputs(8192, 2048, 32000, "cuda", torch.bfloat16)
    results["peer F.cross_entropy(x @ W.T) (8192x2048, vocab 32000)"] = {
        "torch_ms": round(_cuda_time_ms(lambda: _peer_loss(h, wv, t).backward()), 3)
    }
    return results


def _gpu_ce_memory() -> dict:
    def peak(fn) -> float:
        h, w, t = _ce_inputs(8192, 2048, 32000, "cuda", torch.bfloat16)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn(h, w, t).backward()
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    ours = peak(lambda h, w, t: _ours_loss(h, w, t, "triton"))
    peer = peak(_peer_loss)
    return {
        "ours": round(ours, 1),
        "peer": round(peer, 1),
        "ratio": round(peer / ours, 2),
        "unit": "MiB",
        "shape": "8192 tokens x hidden 2048 x vocab 32000, bf16",
    }


def _train_tokens_per_s(mode: str, steps: int, batch: int) -> dict:
    from modelcore.config import preset
    from modelcore.model import build_model

    cfg = dataclasses.replace(preset("gpt2-small").model, kernels=mode)
    torch.manual_seed(0)
    model = build_model(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, cfg.vocab_size, (batch, cfg.max_seq_len + 1), device="cuda")

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(ids[:, :-1], ids[:, 1:])
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    return {
        "tokens_per_s": round(batch * cfg.max_seq_len * steps / elapsed),
        "peak_mem_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def _gpu_tokens_per_s(steps: int = 10, batch: int = 8) -> dict:
    results: dict = {"model": "gpt2-small preset", "batch": batch, "dtype": "bf16 autocast"}
    for mode in kernels.BACKENDS:
        try:
            results[mode] = _train_tokens_per_s(mode, steps, batch)
        except Exception as exc:  # report a failing mode, measure the others
            results[mode] = f"error: {type(exc).__name__}: {exc}"
        torch.cuda.empty_cache()
    return results


def gpu_section() -> dict:
    return {
        "device": torch.cuda.get_device_name(),
        "op_fwd_bwd": _gpu_op_times(),
        "ce_peak_memory": _gpu_ce_memory(),
        "train_tokens_per_s": _gpu_tokens_per_s(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ce-child", choices=("ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument(
        "--gpu-only", action="store_true", help="only the GPU section (scripts/gpu_check.sh); needs CUDA"
    )
    args = parser.parse_args()
    if args.ce_child:
        _ce_child(args.ce_child, Path(args.out))
        return
    if args.gpu_only and not torch.cuda.is_available():
        parser.error("--gpu-only: torch sees no CUDA GPU here")
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:  # the CPU part does not need it
        triton_version = None
    result = {
        "benchmark": "kernels",
        "versions": {"torch": torch.__version__, "triton": triton_version},
        "threads": torch.get_num_threads(),
    }
    if not args.gpu_only:
        result["ce_peak_memory"] = ce_peak_memory()
    if torch.cuda.is_available():
        result["gpu"] = gpu_section()
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
