"""Float32 matrix multiplies on x86 CPUs through oneDNN or torch's BLAS, whichever is faster here.

Why: PyTorch's x86 wheels send float32 ``mm``/``linear`` to Intel MKL. On AMD CPUs MKL
may run a generic code path, and oneDNN, which picks its kernels from the CPU's feature
flags, can be much faster with the same float32 arithmetic (IEEE, no reduced-precision
math). How much depends on the CPU, so neither route is assumed:

- EPYC Zen 5 (AVX-512), a small Llama's shapes: MKL about 100 GFLOP/s per core, oneDNN
  170-250; the trainer went 1.78x the Hugging Face loop with every product on oneDNN.
- EPYC Zen 4, 2 cores, quiet, ``benchmarks.train_throughput``: every product on oneDNN
  made the trainer 0.97x the Hugging Face loop, every product on MKL 1.05x.
- Intel Xeon, 2 cores, shared and busy (this project's dev machine): MKL runs its own
  kernels; oneDNN took 1.1-4x MKL's time on all 30 small-Llama products measured, and the
  measured routes kept every one on MKL (the forced-oneDNN trainer ran at 0.63x the peer).

The rule: each product (``a @ b.T``, by its m, n, k rounded up to powers of two, the
operands' layouts and the thread count) is timed on both routes the first time it is seen,
a few runs each, medians compared; oneDNN is taken only when its median is under
``ONEDNN_MARGIN`` times torch's, so noise leaves a product on torch's own path. ``linear`` times its forward product
and the two backward ones (d(input) = grad @ W, d(weight) = grad.T @ x) together, so each
product of a training step takes its own route. Decisions are remembered per CPU model and
torch version on disk (``modelcore.kernels.matmul_routes``): a model's handful of shapes
costs well under a second once per machine. ``RUNWRIGHT_MATMUL_ROUTE=onednn|blas`` forces
every product onto one route (comparisons, tests); ``forced_route`` does the same for a block.

Multiplies smaller than ``MIN_MACS`` multiply-adds (decode steps, tiny test models) stay on
torch's path unmeasured: oneDNN costs ~10 µs more per call. Everything else (other dtypes,
autocast, other devices, ``torch.backends.mkldnn`` disabled, non-x86 machines) goes to torch
too.

``linear(x, weight)`` is ``F.linear(x, weight)`` with a gradient; ``mm_nt(a, b)`` is
``a @ b.T`` without one, for code that computes its own gradients (the fused loss). Under
torch.compile every eligible product goes through the custom op ``routed_linear``, which
torch.compile treats as one opaque kernel (inductor's own lowering of the oneDNN op expects
pre-packed inference weights) and which looks its route up when it runs, on real shapes:
the graph stays whole and no timing happens while tracing.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Iterator, Mapping

import torch
import torch.nn.functional as F
from torch.distributed.tensor import DTensor

from modelcore.kernels.matmul_routes import Decision, Product, RouteTable

# Below about a million multiply-adds oneDNN's per-call overhead outweighs its faster kernel
# (measured: 64x64x64 takes 17 µs vs 10 µs through MKL; 512x64x192 takes 43 µs vs 69 µs).
MIN_MACS = 1 << 20

# oneDNN must beat torch's BLAS by 10% to be taken: on a shared machine two medians of a few
# runs differ by a few percent on their own, and a product left on torch's path is never
# slower than torch.
ONEDNN_MARGIN = 0.9
_TIMED_RUNS = 5  # per route, after one warm-up run each (oneDNN builds its kernel then)
_TIMING_BUDGET_S = 0.05  # per product: past it, stop after the second timed run

ROUTE_ENV = "RUNWRIGHT_MATMUL_ROUTE"
ROUTES = ("measure", "onednn", "blas")

# Decided once: torch.compile cannot trace into torch.backends' availability checks. The op is
# private to torch (inductor's CPU path uses it): a build without it simply keeps torch's matmuls.
_AVAILABLE = (
    platform.machine().lower() in ("x86_64", "amd64")
    and torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, "_linear_pointwise")
)


def route_from_env(environ: Mapping[str, str] = os.environ) -> str | None:
    """The route ``RUNWRIGHT_MATMUL_ROUTE`` forces ("onednn" or "blas"), or None to measure."""
    value = environ.get(ROUTE_ENV, "").strip().lower() or "measure"
    if value not in ROUTES:
        raise ValueError(f"{ROUTE_ENV} must be one of {', '.join(ROUTES)}, got {value!r}")
    return None if value == "measure" else value


_forced: str | None = route_from_env()
_table = RouteTable()


def _onednn_mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # _linear_pointwise(input (..., K), weight (N, K), bias, post-op "none") = input @ weight.T;
    # it accepts strided (transposed) operands without copying them first.
    return torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")


def _product(a: torch.Tensor, b: torch.Tensor) -> Product:
    """``a @ b.T`` for a (..., K), b (N, K) as the route table knows it."""
    return Product(a.numel() // a.shape[-1], b.shape[0], a.shape[-1], a.stride(-1) != 1, b.stride(-1) != 1)


def _operand(rows: int, cols: int, transposed: bool, gen: torch.Generator) -> torch.Tensor:
    if transposed:
        return torch.randn(cols, rows, generator=gen).t()
    return torch.randn(rows, cols, generator=gen)


def measure(product: Product) -> Decision:
    """Time ``product`` on both routes (interleaved, so a load swing hits both) and pick one."""
    # A private generator: drawing from the global one would change a run's data and weights
    # depending on whether the routes were already known.
    gen = torch.Generator().manual_seed(0)
    a = _operand(product.m, product.k, product.a_transposed, gen)
    b = _operand(product.n, product.k, product.b_transposed, gen)
    routes = {"onednn": _onednn_mm_nt, "blas": F.linear}
    times: dict[str, list[float]] = {name: [] for name in routes}
    with torch.no_grad():
        try:
            for fn in routes.values():
                fn(a, b)
        except RuntimeError:  # a oneDNN build that rejects this layout: torch's path it is
            return Decision(False, shape=(product.m, product.n, product.k))
        deadline = time.perf_counter() + _TIMING_BUDGET_S
        for run in range(_TIMED_RUNS):
            for name in routes if run % 2 else reversed(routes):
                start = time.perf_counter()
                routes[name](a, b)
                times[name].append(time.perf_counter() - start)
            if run >= 1 and time.perf_counter() > deadline:
                break
    onednn, blas = (statistics.median(times[n]) * 1e6 for n in ("onednn", "blas"))
    return Decision(
        onednn < ONEDNN_MARGIN * blas, round(onednn, 1), round(blas, 1), (product.m, product.n, product.k)
    )


def _onednn_chosen(products: list[Product]) -> list[bool]:
    if _forced is not None:
        return [_forced == "onednn"] * len(products)
    return _table.decide(products, measure)


def _routed_mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if torch.backends.mkldnn.enabled and _onednn_chosen([_product(a, b)])[0]:
        return _onednn_mm_nt(a, b)
    return F.linear(a, b)


@torch.library.custom_op("modelcore::routed_linear", mutates_args=())
def routed_linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``x @ weight.T`` (x (..., K), weight (N, K)) on the route measured fastest, with a gradient."""
    return _routed_mm_nt(x, weight)


@routed_linear.register_fake
def _(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: torch.Tensor) -> None:
    x, weight = inputs
    ctx.save_for_backward(x, weight)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple:
    # Each product routes itself by its own shape and layout when it runs.
    x, weight = ctx.saved_tensors
    grad_x = grad_w = None
    if ctx.needs_input_grad[0]:
        grad_x = routed_linear(grad, weight.t())  # (..., N) @ (N, K) -> (..., K)
    if ctx.needs_input_grad[1]:
        grad2d = grad.reshape(-1, grad.shape[-1])  # (M, N)
        x2d = x.reshape(-1, x.shape[-1])  # (M, K)
        grad_w = routed_linear(grad2d.t(), x2d.t())  # (N, M) @ (M, K) -> (N, K)
    return grad_x, grad_w


routed_linear.register_autograd(_backward, setup_context=_setup_context)


def _eligible(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a @ b.T`` (a (..., K), b (N, K)) may run on oneDNN at all."""
    return (
        _AVAILABLE
        # A tensor-parallel weight (DTensor) takes F.linear, which DTensor knows how to shard.
        and not isinstance(a, DTensor)
        and not isinstance(b, DTensor)
        and a.device.type == "cpu"
        and b.device.type == "cpu"
        and a.dtype == torch.float32
        and b.dtype == torch.float32
        and torch.backends.mkldnn.enabled
        # Autocast does not cast a custom op's inputs: under it, F.linear runs in low precision.
        and not torch.is_autocast_enabled("cpu")
        and a.numel() * b.shape[0] >= MIN_MACS
    )


def use_onednn(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether ``a @ b.T`` (a (..., K), b (N, K)) goes to oneDNN (under torch.compile: to the routed op)."""
    if not _eligible(a, b):
        return False
    return torch.compiler.is_compiling() or _onednn_chosen([_product(a, b)])[0]


def linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight)`` without bias (x (..., K), weight (N, K)), each product on its faster route."""
    if not _eligible(x, weight):
        return F.linear(x, weight)
    if torch.compiler.is_compiling():
        # Shapes are fake (or symbolic) while tracing: the op looks its routes up when it runs.
        return routed_linear(x, weight)
    products = [_product(x, weight)]
    if torch.is_grad_enabled():
        m, k, n = x.numel() // x.shape[-1], x.shape[-1], weight.shape[0]
        if x.requires_grad:  # grad (M, N) @ weight (N, K), read as grad @ (weight.T).T
            products.append(Product(m, k, n, False, weight.stride(0) != 1))
        if weight.requires_grad:  # grad.T (N, M) @ x (M, K), both transposed views
            products.append(Product(n, k, m, True, True))
    if any(_onednn_chosen(products)):
        return routed_linear(x, weight)
    return F.linear(x, weight)


def mm_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` for 2-d a (M, K) and b (N, K), outside autograd, on its faster route."""
    if not _eligible(a, b):
        return a @ b.t()
    if torch.compiler.is_compiling():
        return routed_linear(a, b)
    if _onednn_chosen([_product(a, b)])[0]:
        return _onednn_mm_nt(a, b)
    return a @ b.t()


def route_table() -> dict[str, dict]:
    """The routes this process has decided, by bucket (``"2t 2048x512x256 nn"``), with their timings."""
    return {key: d.to_json() for key, d in sorted(_table.decisions().items())}


def clear_routes() -> None:
    """Forget the decisions held in memory: the next product reads the routes file again."""
    _table.clear()


@contextlib.contextmanager
def forced_route(route: str) -> Iterator[None]:
    """Within the block every eligible product takes ``route`` ("onednn", "blas" or "measure")."""
    global _forced
    if route not in ROUTES:
        raise ValueError(f"route must be one of {', '.join(ROUTES)}, got {route!r}")
    previous = _forced
    _forced = None if route == "measure" else route
    try:
        yield
    finally:
        _forced = previous


@contextlib.contextmanager
def blas_matmuls() -> Iterator[None]:
    """Within the block, float32 matmuls take torch's own BLAS path (to compare the two).

    Only the mkldnn switch is flipped: ``torch.backends.mkldnn.flags`` would also reset its
    TF32 setting, which warns on machines without an Intel GPU.
    """
    previous = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = previous
