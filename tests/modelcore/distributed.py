"""What the tensor- and expert-parallel tests share: launching workers under torchrun, the
mesh on a fake process group, comparing losses with a reference run, moving a checkpoint into
another run, reading which rank wrote what into a sharded checkpoint; and, on the workers'
side, the gloo process group and the gradient comparison.

Imported by the tests and by the ``torchrun`` worker (``step_worker.py`` and its
``tp_step.py``, ``ep_step.py``),
which run with this folder on ``sys.path``; so it imports no pytest and nothing from the web app.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


# --- test side ---------------------------------------------------------------


# One step of a split model against the whole one, by kind ("tp", "ep"): each test module
# registers its cases when imported, and the first to ask runs them all in one launch
# (``step_worker.py``): a launch costs more than the steps of these tiny models.
_STEP_CASES: dict[str, list[dict[str, Any]]] = {}


def register_step_cases(kind: str, cases: list[dict[str, Any]]) -> None:
    """Cases for ``step_worker.py``'s ``kind``, each a dict with an ``"id"``."""
    _STEP_CASES[kind] = cases


@functools.cache
def step_results() -> dict[str, dict[str, Any]]:
    """The results of every registered case, by kind and case id (one torchrun launch)."""
    out_dir = Path(tempfile.mkdtemp(prefix="parallel-steps-"))
    try:
        return torchrun("step_worker.py", out_dir, json.dumps(_STEP_CASES))
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def torchrun(worker: str, out_dir: Path, *args: str, nproc: int = 2, timeout: float = 240) -> Any:
    """Run ``worker`` (a file of this folder) on ``nproc`` CPU processes; the JSON it wrote.

    The worker gets ``args`` and then the path of its output file as arguments.
    """
    from modelcore.launch import free_port

    out = out_dir / f"{Path(worker).stem}.json"
    argv = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        str(nproc),
        "--master_addr",
        "127.0.0.1",
        "--master_port",
        str(free_port()),
        str(HERE / worker),
        *args,
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())


@functools.cache
def fake_meshes() -> dict[str, dict[int, dict[str, Any]]]:
    """``build_mesh`` of 4 ranks on torch's fake process group, per layout: ``"2x1"`` (TP=2)
    and ``"1x2"`` (EP=2), per rank: dimension names, shape, coordinates and each dimension's
    ranks. In this process (no launch): each rank's group is made, read and destroyed in turn."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore

    from modelcore.parallelize import build_mesh

    assert not dist.is_initialized()
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for tp, ep in ((2, 1), (1, 2)):
        meshes = out.setdefault(f"{tp}x{ep}", {})
        for rank in range(4):
            dist.init_process_group("fake", store=FakeStore(), rank=rank, world_size=4)
            try:
                mesh = build_mesh("cpu", 4, tp, ep)
                meshes[rank] = {
                    "names": list(mesh.mesh_dim_names),
                    "shape": list(mesh.shape),
                    "coords": list(mesh.get_coordinate()),
                    **{name: mesh[name].mesh.tolist() for name in mesh.mesh_dim_names},
                }
            finally:
                dist.destroy_process_group()
    return out


def assert_same_losses(
    losses: dict[int, float], expected: dict[int, float], steps: range, abs_tol: float = 1e-4
) -> None:
    """``losses`` covers exactly ``steps``, each equal to the reference run's loss of that step."""
    assert sorted(losses) == list(steps), sorted(losses)
    worst = max(steps, key=lambda s: abs(losses[s] - expected[s]))
    assert abs(losses[worst] - expected[worst]) <= abs_tol, (worst, losses[worst], expected[worst])


def copy_checkpoint(src_run: Path, step: int, dst_run: Path) -> Path:
    """Put ``src_run``'s checkpoint of ``step`` into ``dst_run``, which then resumes from it
    (as the run would after a cancel at that step, under whatever layout starts it next)."""
    from modelcore.checkpoint_layout import CHECKPOINTS_DIR, checkpoint_name

    dst = dst_run / CHECKPOINTS_DIR / checkpoint_name(step)
    shutil.copytree(src_run / CHECKPOINTS_DIR / checkpoint_name(step), dst)
    return dst


def written_by_file(checkpoint: Path) -> dict[str, set[str]]:
    """Which tensors (``model.<name>``, ``optimizer.state.<name>.<key>``) each file of a sharded
    checkpoint's ``state/`` holds a chunk of, by file name (``__<rank>_0.distcp``)."""
    from torch.distributed.checkpoint import FileSystemReader

    files: dict[str, set[str]] = {}
    for index, info in FileSystemReader(checkpoint / "state").read_metadata().storage_data.items():
        files.setdefault(info.relative_path, set()).add(index.fqn)
    return files


# --- worker side (under torchrun) ----------------------------------------------


@contextlib.contextmanager
def gloo_group() -> Iterator[None]:
    import torch.distributed as dist

    dist.init_process_group("gloo")
    try:
        yield
    finally:
        dist.destroy_process_group()


def grad_diffs(plain: Any, split: Any) -> dict[str, float]:
    """Per parameter that ``split`` holds, the largest difference between its gradient (a
    DTensor's whole) and the plain model's gradient of the same name."""
    from torch.distributed.tensor import DTensor

    plain_params = dict(plain.named_parameters())
    diffs = {}
    for name, p in split.named_parameters():
        grad = p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad
        diffs[name] = (grad - plain_params[name].grad).abs().max().item()
    return diffs


def write_on_rank_0(out: str, result: Any) -> None:
    import torch.distributed as dist

    if dist.get_rank() == 0:
        Path(out).write_text(json.dumps(result))
