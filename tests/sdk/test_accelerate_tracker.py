"""RunwrightTracker in a real 2-process CPU launch (accelerate launch, gloo) against a live server: one run, rank 0's points."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from sdk_support import SDK
from service_processes import free_port

from webapp.metrics.models import MetricPoint
from webapp.runs.models import Run, RunStatus

SCRIPT = textwrap.dedent(
    """
    import torch
    import torch.distributed as dist
    from accelerate import Accelerator
    from runwright.integrations.accelerate import RunwrightTracker

    accelerator = Accelerator(log_with=RunwrightTracker(project="accel", name="ddp", tags=["ddp"]))
    accelerator.init_trackers("accel", config={"lr": 0.1, "world_size": accelerator.num_processes})
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    x, y = torch.randn(16, 4), torch.randn(16, 1)
    for step in range(20):
        loss = torch.nn.functional.mse_loss(model(x), y)
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()
        accelerator.log({"train/loss": loss.item(), "rank": float(accelerator.process_index)}, step=step)
    accelerator.end_training()
    if dist.is_initialized():
        dist.destroy_process_group()
    """
)


def test_two_processes_log_one_run_from_rank_zero(server, token, tmp_path, project):
    pytest.importorskip("accelerate")
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    env = {
        **os.environ,
        "RUNWRIGHT_URL": server,
        "RUNWRIGHT_TOKEN": token,
        "RUNWRIGHT_DIR": str(tmp_path / "runs"),
        "PYTHONPATH": str(SDK),
        "OMP_NUM_THREADS": "1",
    }
    # The launch Runwright's own trainer uses (modelcore.launch): CPU processes on gloo.
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
    argv += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    argv += ["--main_process_ip", "127.0.0.1", "--main_process_port", str(free_port())]
    env["ACCELERATE_USE_CPU"] = "1"
    done = subprocess.run(
        [*argv, str(script)], env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-4000:]
    (run,) = Run.objects.filter(project__name="accel")
    assert run.name == "ddp" and run.status == RunStatus.COMPLETED
    assert run.config["params"] == {"lr": 0.1, "world_size": 2}
    steps = list(
        MetricPoint.objects.filter(run=run, key="train/loss").order_by("step").values_list("step", flat=True)
    )
    assert steps == list(range(20))
    assert set(MetricPoint.objects.filter(run=run, key="rank").values_list("value", flat=True)) == {0.0}
