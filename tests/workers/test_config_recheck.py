"""The worker re-checks a stored config before launch: a tampered one fails, never launched."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelcore.config import RunConfig, preset
from modelcore.launch import launch_command
from webapp.accounts.models import Team
from webapp.projects.models import Project
from webapp.runs import transitions
from webapp.runs.models import Run, RunStatus
from workers.supervisor import supervise


@pytest.fixture
def launches():
    """A command builder that records each launch instead of starting anything."""
    calls: list[Path] = []

    def build(config: RunConfig, run_dir: Path) -> tuple[list[str], dict[str, str]]:
        calls.append(run_dir)
        raise AssertionError("the trainer must not be launched")

    build.calls = calls
    return build


def tampered(make_run, section: str, name: str, value) -> Run:
    """A queued run whose stored config was changed behind the web's back, then claimed."""
    config = preset("tiny-cpu").to_dict()
    config[section][name] = value
    run = make_run(config=config)
    claimed = transitions.claim_for_launch(run.id, "test-worker")
    assert claimed is not None
    return claimed


@pytest.mark.parametrize(
    ("section", "name", "value"),
    [
        ("data", "corpus", "/etc/passwd"),
        ("data", "tokenizer", "/etc"),
        ("train", "init_from", "/etc"),
        ("train", "init_from", "run:1"),
    ],
)
def test_a_tampered_path_fails_the_run_without_launching(make_run, launches, section, name, value):
    run = tampered(make_run, section, name, value)
    assert supervise(run, command=launches, poll_seconds=0.1) == RunStatus.FAILED
    run.refresh_from_db()
    assert run.status == RunStatus.FAILED and run.pid is None
    assert f"{section}.{name}" in run.error and "allowed:" in run.error
    assert launches.calls == []


def test_another_teams_run_folder_fails_the_run_without_launching(make_run, launches, runs_dir):
    theirs = Project.objects.create(team=Team.objects.create(name="others"), name="theirs")
    other = Run.objects.create(project=theirs, name="theirs", config=preset("tiny-cpu").to_dict())
    run = tampered(make_run, "train", "init_from", str(runs_dir / str(other.id)))
    assert supervise(run, command=launches, poll_seconds=0.1) == RunStatus.FAILED
    run.refresh_from_db()
    assert "cannot see" in run.error and launches.calls == []


def test_more_cpu_ranks_than_the_worker_allows_fail_the_run_without_launching(make_run, settings):
    settings.MAX_CPU_PROCESSES = 1
    run = tampered(make_run, "parallel", "device", "cpu")  # tiny-cpu asks for 2 CPU processes
    assert supervise(run, poll_seconds=0.1) == RunStatus.FAILED  # the real launcher's command
    run.refresh_from_db()
    assert run.pid is None
    assert "parallel.num_processes: 2 CPU processes" in run.error
    assert "RUNWRIGHT_MAX_CPU_PROCESSES" in run.error


def test_the_cpu_cap_leaves_gpu_ranks_alone(tmp_path):
    config = RunConfig.from_dict(
        {"parallel": {"device": "auto", "num_processes": 4}}, base=preset("tiny-cpu")
    )
    argv, _ = launch_command(config, tmp_path, gpus_available=4, max_cpu_processes=1)
    assert argv[argv.index("--num_processes") + 1] == "4"
    with pytest.raises(ValueError, match="at most 1"):
        launch_command(config, tmp_path, gpus_available=0, max_cpu_processes=1)
    launch_command(config, tmp_path, gpus_available=0)  # the CLI has no cap
