"""The Slurm tests' cluster: one real ``slurmctld`` + ``slurmd`` + ``munged`` for the session.

Skipped only where the binaries are absent, with the command that installs them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_cluster import INSTALL_HINT, SlurmCluster, missing_binaries


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): {INSTALL_HINT}")
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="runwright-slurm-")))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster, monkeypatch) -> SlurmCluster:
    """The session's cluster, with its ``SLURM_CONF`` in this test's environment and its node up."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    if not slurm_cluster.node_idle():
        slurm_cluster.resume_node()
    return slurm_cluster


@pytest.fixture(autouse=True)
def runs_dir(settings, tmp_path) -> Path:
    """Each test's runs in their own folder (a rolled-back test reuses run ids)."""
    settings.RUNS_DIR = tmp_path / "runs"
    return settings.RUNS_DIR


@pytest.fixture
def slurm_launcher(settings, slurm) -> SlurmCluster:
    """Runs go to the test cluster as sbatch jobs."""
    settings.LAUNCHER = "slurm"
    return slurm
