"""The job script and sbatch's arguments: config values as arguments, paths quoted, operator defaults checked."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from modelcore.config import RunConfig
from workers import slurm


def spec(settings, **launcher) -> slurm.SlurmJobSpec:
    config = RunConfig.from_dict({"parallel": {"num_processes": 4, "device": "cuda"}, "launcher": launcher})
    return slurm.job_spec(config, name="runwright-run-1", stop_grace_s=90)


def test_the_config_and_the_operator_defaults_become_sbatch_arguments(settings):
    settings.SLURM_PARTITION, settings.SLURM_ACCOUNT, settings.SLURM_TIME_LIMIT_MIN = "gpu", "ops", 600
    job = spec(settings, nodes=2, account="ml-team", qos="high")
    argv = slurm.sbatch_argv(job, Path("/shared/runs/1/slurm-job.sh"), Path("/shared/runs/1"))
    assert {"--nodes=2", "--gpus-per-node=2", "--partition=gpu", "--account=ml-team", "--qos=high"} <= set(
        argv
    )
    assert {"--time=600", "--signal=TERM@90", "--no-requeue", "--ntasks-per-node=1"} <= set(argv)
    assert argv[-1] == "/shared/runs/1/slurm-job.sh"


def test_a_bad_operator_default_names_its_variable(settings):
    settings.SLURM_QOS = "high; rm -rf ~"
    with pytest.raises(ValueError, match="RUNWRIGHT_SLURM_QOS"):
        spec(settings)


def test_the_script_quotes_every_path_and_runs_torchrun_under_srun(settings, tmp_path):
    run_dir = tmp_path / "runs $(touch pwned) `id`; x"
    job = spec(settings, nodes=2)
    argv, _ = slurm.node_command(RunConfig(), run_dir)
    script = slurm.job_script(job, argv, header="run 1 attempt 1\n$(touch pwned)")
    assert "exec srun --kill-on-bad-exit=1 --ntasks-per-node=1 " in script
    assert "--nnodes=2 --nproc-per-node=2 --rdzv-backend=c10d" in script
    # bash parses it without running anything: the run dir is one word, the header a comment.
    checked = subprocess.run(["bash", "-n"], input=script, text=True, capture_output=True)
    assert checked.returncode == 0, checked.stderr
    words = subprocess.run(
        ["bash", "-c", 'printf "%s\\n" ' + script.rsplit("--run-dir ", 1)[1]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    ).stdout.splitlines()
    assert words == [str(run_dir.resolve())]
    assert not (tmp_path / "pwned").exists()


def test_a_slurm_worker_leases_none_of_its_own_gpus(settings, monkeypatch):
    from workers import tasks

    monkeypatch.setenv("RUNWRIGHT_GPUS", "0,1,2,3")
    config = RunConfig.from_dict({"parallel": {"num_processes": 2, "device": "cuda"}}).to_dict()
    assert tasks._gpus_to_lease(config) == 2
    settings.LAUNCHER = "slurm"
    assert tasks._gpus_to_lease(config) == 0


def test_the_rendezvous_port_is_one_free_on_the_first_node_unless_the_operator_fixes_one(settings):
    argv, _ = slurm.node_command(RunConfig(), Path("/shared/runs/1"))
    settings.SLURM_RDZV_PORT = 0
    script = slurm.job_script(spec(settings, nodes=2), argv)
    [line] = [line for line in script.splitlines() if line.startswith("rdzv_port=")]
    # The script's own line, run here (the batch script runs on the job's first node).
    port = subprocess.run(["bash", "-c", f'{line}; echo "$rdzv_port"'], capture_output=True, text=True)
    assert port.returncode == 0 and 0 < int(port.stdout) < 65536, port.stderr
    assert '--rdzv-endpoint="${head_addr:-$head_node}:$rdzv_port"' in script
    settings.SLURM_RDZV_PORT = 29555
    assert "\nrdzv_port=29555\n" in slurm.job_script(spec(settings, nodes=2), argv)
