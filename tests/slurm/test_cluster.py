"""The test cluster itself: a batch job runs to its end on the real daemons."""

from __future__ import annotations

import subprocess
import time


def test_a_batch_job_runs_to_completion(slurm, tmp_path):
    out = tmp_path / "job.out"
    submitted = subprocess.run(
        ["sbatch", "--parsable", "-o", str(out), "--wrap", "echo hello from slurm"],
        capture_output=True,
        text=True,
        check=True,
    )
    job_id = submitted.stdout.strip().split(";")[0]
    deadline = time.monotonic() + 60
    state = ""
    while time.monotonic() < deadline:
        state = subprocess.run(
            ["squeue", "-h", "--states=all", "-j", job_id, "-o", "%T"], capture_output=True, text=True
        ).stdout.strip()
        if state == "COMPLETED":
            break
        time.sleep(0.2)
    assert state == "COMPLETED", slurm.logs()
    assert out.read_text() == "hello from slurm\n"
