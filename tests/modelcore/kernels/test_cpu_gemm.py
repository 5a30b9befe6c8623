"""The oneDNN float32 matmuls (modelcore.kernels.cpu_gemm) against torch's own, on CPU.

Reference: the same product in float64. Tolerances: a float32 dot product of length K
rounds to ~K * 2^-24 of the sum of |terms|; at the sizes here (K <= 512, unit-variance
inputs) both oneDNN and torch's BLAS stay within atol 2e-4 / rtol 1e-4 of float64. The
test also holds oneDNN to at most 4x torch's own error (measured 1.5-3x: it blocks the sums
differently); reduced-precision math (bf16/tf32) would be ~1000x off.

Which route a product takes is measured per machine (``modelcore.kernels.matmul_routes``);
tests of the oneDNN numbers force that route, and every test keeps its routes file in its
own temporary directory.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from modelcore import kernels
from modelcore.kernels import cpu_gemm, matmul_routes

pytestmark = pytest.mark.skipif(
    not cpu_gemm._AVAILABLE, reason="oneDNN matmuls are used on x86 CPUs with mkldnn only"
)

ATOL, RTOL = 2e-4, 1e-4


@pytest.fixture(autouse=True)
def routes_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh routes file per test, and no decision carried over in memory."""
    path = tmp_path / "routes" / "matmul_routes.json"
    monkeypatch.setenv(matmul_routes.ROUTES_FILE_ENV, str(path))
    cpu_gemm.clear_routes()
    yield path
    cpu_gemm.clear_routes()


def _inputs(shape_x: tuple[int, ...], out: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape_x, generator=gen)
    w = torch.randn(out, shape_x[-1], generator=gen) * shape_x[-1] ** -0.5
    return x, w


def _value_and_grads(fn, x: torch.Tensor, w: torch.Tensor, upstream: torch.Tensor):
    x = x.detach().requires_grad_()
    w = w.detach().requires_grad_()
    y = fn(x, w)
    gx, gw = torch.autograd.grad(y, (x, w), upstream.to(y.dtype))
    return y, gx, gw


def _max_errors(got, ref) -> list[float]:
    return [(a.double() - b).abs().max().item() for a, b in zip(got, ref, strict=True)]


@pytest.mark.parametrize("shape_x", [(512, 256), (4, 128, 256)])
def test_linear_equals_f_linear_forward_and_grads(shape_x: tuple[int, ...]):
    x, w = _inputs(shape_x, 384)
    upstream = torch.randn(*shape_x[:-1], 384, generator=torch.Generator().manual_seed(1))
    with cpu_gemm.forced_route("onednn"):
        assert cpu_gemm.use_onednn(x, w), "this size must take the oneDNN path"
        ours = _value_and_grads(kernels.linear, x, w, upstream)
    blas = _value_and_grads(F.linear, x, w, upstream)
    exact = _value_and_grads(F.linear, x.double(), w.double(), upstream)
    for a, b in zip(ours, exact, strict=True):
        torch.testing.assert_close(a.double(), b, atol=ATOL, rtol=RTOL)
    for ours_err, blas_err in zip(_max_errors(ours, exact), _max_errors(blas, exact), strict=True):
        assert ours_err <= 4 * blas_err + 1e-6


def test_mm_nt_of_transposed_operands():
    """The fused loss multiplies transposed views (grad.T @ h); oneDNN must read their strides."""
    gen = torch.Generator().manual_seed(2)
    g, h = torch.randn(256, 1024, generator=gen), torch.randn(256, 128, generator=gen)
    with cpu_gemm.forced_route("onednn"):
        assert cpu_gemm.use_onednn(g.t(), h.t())
        got = cpu_gemm.mm_nt(g.t(), h.t())  # (1024, 256) @ (256, 128)
    torch.testing.assert_close(got.double(), g.double().t() @ h.double(), atol=ATOL, rtol=RTOL)


def test_small_multiplies_and_other_dtypes_stay_on_torch():
    x, w = _inputs((64, 64), 64)
    assert not cpu_gemm.use_onednn(x, w)  # below MIN_MACS: oneDNN's call overhead would dominate
    big_x, big_w = _inputs((512, 256), 384)
    assert not cpu_gemm.use_onednn(big_x.double(), big_w.double())
    assert not cpu_gemm.use_onednn(big_x.bfloat16(), big_w.bfloat16())
    with cpu_gemm.forced_route("onednn"):
        with cpu_gemm.blas_matmuls():
            assert not cpu_gemm.use_onednn(big_x, big_w)
        assert cpu_gemm.use_onednn(big_x, big_w)
    assert cpu_gemm.route_table() == {}, "nothing here was big enough to measure"


def test_autocast_still_casts_the_multiply():
    """Mixed precision on the CPU: the product runs in bfloat16, as F.linear's would."""
    x, w = _inputs((512, 256), 384)
    with cpu_gemm.forced_route("onednn"), torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_gemm.use_onednn(x, w)
        y = kernels.linear(x, w)
    assert y.dtype == torch.bfloat16


def test_custom_op_registration_is_sound():
    """torch.library's own checks: fake (meta) kernel, autograd registration, schema."""
    x, w = _inputs((256, 128), 64)
    for route in ("onednn", "blas"):
        with cpu_gemm.forced_route(route):
            torch.library.opcheck(cpu_gemm.routed_linear, (x.requires_grad_(), w.requires_grad_()))


@pytest.mark.parametrize("route", ["onednn", "blas", "measure"])
@pytest.mark.parametrize("backend", ["eager", "inductor"])
def test_linear_under_torch_compile(backend: str, route: str):
    """One graph, same numbers: the routed op is opaque to Dynamo and Inductor, on either route."""
    x, w = _inputs((512, 256), 384, seed=3)
    upstream = torch.randn(512, 384, generator=torch.Generator().manual_seed(4))

    def fn(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return kernels.linear(x, w) * 2.0

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    with cpu_gemm.forced_route(route):
        got = _value_and_grads(compiled, x, w, upstream)
        eager = _value_and_grads(fn, x, w, upstream)
    for a, b in zip(got, eager, strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def test_fused_loss_on_onednn_equals_reference():
    """The fused linear + cross-entropy's three products take the oneDNN path at this size."""
    gen = torch.Generator().manual_seed(5)
    h = torch.randn(300, 128, generator=gen)
    w = torch.randn(2048, 128, generator=gen) * 0.1
    t = torch.randint(0, 2048, (300,), generator=gen)
    t[::7] = -100
    with cpu_gemm.forced_route("onednn"):
        assert cpu_gemm.use_onednn(h[:128], w)

    def loss_and_grads(fn):
        hh, ww = h.clone().requires_grad_(), w.clone().requires_grad_()
        loss = fn(hh, ww, t)
        return (loss, *torch.autograd.grad(loss, (hh, ww)))

    with cpu_gemm.forced_route("onednn"):
        ours = loss_and_grads(lambda a, b, c: kernels.fused_linear_cross_entropy(a, b, c, chunk_rows=128))
    ref = loss_and_grads(kernels.linear_cross_entropy_reference)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


# --- Which route: measured once per machine and bucket, remembered in the routes file ---

BIG = ((512, 256), 384)  # x (512, 256), weight (384, 256): 50M multiply-adds, measured


def _stored(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text())["machines"][matmul_routes.machine_key()]


def test_linear_times_its_forward_and_both_backward_products(routes_file: Path):
    x, w = _inputs(*BIG)
    y = kernels.linear(x.requires_grad_(), w.requires_grad_())
    y.sum().backward()
    threads = torch.get_num_threads()
    # (m, n, k) of each a @ b.T: forward x @ W.T, d(x) = grad @ W, d(W) = grad.T @ x.
    expected = {f"{threads}t 512x512x256 nn", f"{threads}t 512x256x512 nt", f"{threads}t 512x256x512 tt"}
    stored = _stored(routes_file)
    assert set(stored) == expected
    assert set(cpu_gemm.route_table()) == expected
    for decision in stored.values():
        assert decision["onednn_us"] > 0 and decision["blas_us"] > 0
        faster = decision["onednn_us"] < cpu_gemm.ONEDNN_MARGIN * decision["blas_us"]
        assert decision["route"] == ("onednn" if faster else "blas")
    key = matmul_routes.machine_key()
    assert matmul_routes.cpu_model() in key and torch.__version__ in key


@pytest.mark.parametrize("route", ["onednn", "blas"])
def test_a_stored_route_is_taken_without_measuring(routes_file: Path, route: str):
    x, w = _inputs(*BIG)
    key = matmul_routes.Product(512, 384, 256, False, False).key(torch.get_num_threads())
    routes_file.parent.mkdir(parents=True)
    stored = {key: {"route": route, "onednn_us": None, "blas_us": None, "shape": None}}
    routes_file.write_text(json.dumps({"format": 1, "machines": {matmul_routes.machine_key(): stored}}))
    assert cpu_gemm.use_onednn(x, w) == (route == "onednn")
    assert _stored(routes_file) == stored, "a known bucket is not measured again"


@pytest.mark.parametrize("content", ["{not json", "[]", '{"format": 1, "machines": {"%s": {"%s": "fast"}}}'])
def test_a_damaged_routes_file_is_measured_again_and_replaced(routes_file: Path, content: str):
    key = matmul_routes.Product(512, 384, 256, False, False).key(torch.get_num_threads())
    routes_file.parent.mkdir(parents=True)
    routes_file.write_text(content.replace("%s", matmul_routes.machine_key(), 1).replace("%s", key, 1))
    x, w = _inputs(*BIG)
    with torch.no_grad():
        y = kernels.linear(x, w)
    torch.testing.assert_close(y, F.linear(x, w), atol=ATOL, rtol=RTOL)
    assert _stored(routes_file)[key]["route"] in ("onednn", "blas")


def test_an_unwritable_routes_file_leaves_the_routes_in_memory(tmp_path: Path, monkeypatch, caplog):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv(matmul_routes.ROUTES_FILE_ENV, str(blocker / "matmul_routes.json"))
    x, w = _inputs(*BIG)
    with torch.no_grad():
        torch.testing.assert_close(kernels.linear(x, w), F.linear(x, w), atol=ATOL, rtol=RTOL)
    assert "stay in memory" in caplog.text
    assert len(cpu_gemm.route_table()) == 1


class _CountingMeasure:
    """Stands in for the timing: says oneDNN for products with m >= 1024, and counts its calls."""

    def __init__(self) -> None:
        self.calls: list[matmul_routes.Product] = []

    def __call__(self, product: matmul_routes.Product) -> matmul_routes.Decision:
        self.calls.append(product)
        return matmul_routes.Decision(product.m >= 1024, 1.0, 2.0, (product.m, product.n, product.k))


def test_route_table_measures_each_bucket_once_across_processes(routes_file: Path):
    P = matmul_routes.Product
    measure = _CountingMeasure()
    table = matmul_routes.RouteTable()
    assert table.decide([P(2048, 256, 256, False, False), P(300, 256, 256, False, False)], measure) == [
        True,
        False,
    ]
    # 500 rounds up to the same bucket as 300; a transposed operand is another product.
    assert table.decide([P(500, 256, 256, False, False), P(2048, 256, 256, True, True)], measure) == [
        False,
        True,
    ]
    assert [p.m for p in measure.calls] == [2048, 300, 2048]
    # A new process (a new table) reads the file and measures nothing.
    again = _CountingMeasure()
    assert matmul_routes.RouteTable().decide([P(2000, 200, 200, False, False)], again) == [True]
    assert again.calls == []


def test_route_table_keeps_other_machines_entries(routes_file: Path):
    routes_file.parent.mkdir(parents=True)
    other = {"Some Other CPU | torch 2.4.0": {"1t 64x64x64 nn": {"route": "onednn"}}}
    routes_file.write_text(json.dumps({"format": 1, "machines": other}))
    measure = _CountingMeasure()
    matmul_routes.RouteTable().decide([matmul_routes.Product(64, 64, 64, False, False)], measure)
    assert len(measure.calls) == 1, "another machine's decision is not this one's"
    machines = json.loads(routes_file.read_text())["machines"]
    assert machines["Some Other CPU | torch 2.4.0"] == other["Some Other CPU | torch 2.4.0"]
    assert matmul_routes.machine_key() in machines


def test_measuring_leaves_the_global_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    cpu_gemm.measure(matmul_routes.Product(512, 384, 256, False, True))
    assert torch.equal(torch.rand(3), expected)


def test_measuring_a_small_models_products_takes_well_under_a_second():
    """The benchmark model's step (d_model 256, SwiGLU 704, 2048 tokens, 128-row loss chunks)."""
    P = matmul_routes.Product
    shapes = [(2048, 256, 256), (2048, 704, 256), (2048, 256, 704), (128, 4096, 256)]
    products = [
        p
        for m, n, k in shapes
        for p in (P(m, n, k, False, False), P(m, k, n, False, True), P(n, k, m, True, True))
    ]
    start = time.process_time()
    for product in products:
        cpu_gemm.measure(product)
    # CPU time, not wall time: a shared machine's other work does not count against it.
    assert time.process_time() - start < 1.0 * torch.get_num_threads()


def test_both_routes_give_the_same_numbers():
    x, w = _inputs((4, 128, 256), 384, seed=6)
    upstream = torch.randn(4, 128, 384, generator=torch.Generator().manual_seed(7))
    results = {}
    for route in ("onednn", "blas"):
        with cpu_gemm.forced_route(route):
            results[route] = _value_and_grads(kernels.linear, x, w, upstream)
    for a, b in zip(results["onednn"], results["blas"], strict=True):
        torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)


def test_route_from_env_names_the_variable_when_wrong():
    assert cpu_gemm.route_from_env({}) is None
    assert cpu_gemm.route_from_env({cpu_gemm.ROUTE_ENV: "measure"}) is None
    assert cpu_gemm.route_from_env({cpu_gemm.ROUTE_ENV: "BLAS"}) == "blas"
    with pytest.raises(ValueError, match="RUNWRIGHT_MATMUL_ROUTE must be one of measure, onednn, blas"):
        cpu_gemm.route_from_env({cpu_gemm.ROUTE_ENV: "mkl"})
    with pytest.raises(ValueError, match="route must be one of"), cpu_gemm.forced_route("fast"):
        pass


@pytest.mark.parametrize("route", ["onednn", "blas"])
def test_env_forces_the_route_for_the_whole_process(routes_file: Path, route: str):
    code = (
        "import torch; from modelcore.kernels import cpu_gemm; "
        "x, w = torch.randn(512, 256), torch.randn(384, 256); print(cpu_gemm.use_onednn(x, w))"
    )
    env = {**os.environ, cpu_gemm.ROUTE_ENV: route, matmul_routes.ROUTES_FILE_ENV: str(routes_file)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == str(route == "onednn")
    assert not routes_file.exists(), "a forced route measures nothing"
