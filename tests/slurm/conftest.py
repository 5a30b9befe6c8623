"""The Slurm tests' clusters: real ``slurmctld`` + ``slurmd`` + ``munged``, each started once a session.

``slurm_cluster`` is one node, this host. ``slurm_two_nodes_cluster`` is two nodes on this
machine (``slurmd -N n1`` and ``-N n2``), each with two fake GPUs (``gres/gpu``), for jobs that
span nodes and ask for GPUs. Skipped only where the binaries are absent, with the command that
installs them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_cluster import GPUS_PER_NODE, INSTALL_HINT, TWO_NODES, SlurmCluster, missing_binaries


def started(cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    missing = missing_binaries()
    if missing:
        pytest.skip(f"Slurm is not installed ({', '.join(missing)} missing): {INSTALL_HINT}")
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    yield from started(SlurmCluster(Path(tempfile.mkdtemp(prefix="runwright-slurm-"))))


@pytest.fixture(scope="session")
def slurm_two_nodes_cluster() -> Iterator[SlurmCluster]:
    root = Path(tempfile.mkdtemp(prefix="runwright-slurm2-"))
    yield from started(SlurmCluster(root, nodes=TWO_NODES, gpus_per_node=GPUS_PER_NODE))


def in_use(cluster: SlurmCluster, monkeypatch) -> SlurmCluster:
    """The cluster, with its ``SLURM_CONF`` in this test's environment and its nodes up."""
    monkeypatch.setenv("SLURM_CONF", str(cluster.conf))
    if not cluster.node_idle():
        cluster.resume_node()
    return cluster


@pytest.fixture
def slurm(slurm_cluster, monkeypatch) -> SlurmCluster:
    return in_use(slurm_cluster, monkeypatch)


@pytest.fixture
def slurm_two_nodes(slurm_two_nodes_cluster, monkeypatch) -> SlurmCluster:
    return in_use(slurm_two_nodes_cluster, monkeypatch)


@pytest.fixture(autouse=True)
def runs_dir(settings, tmp_path) -> Path:
    """Each test's runs in their own folder (a rolled-back test reuses run ids)."""
    settings.RUNS_DIR = tmp_path / "runs"
    return settings.RUNS_DIR


@pytest.fixture
def slurm_launcher(settings, slurm) -> SlurmCluster:
    """Runs go to the one-node test cluster as sbatch jobs."""
    settings.LAUNCHER = "slurm"
    # Each job's rendezvous on a port free when it starts: other jobs and test sessions run here too.
    settings.SLURM_RDZV_PORT = 0
    return slurm


@pytest.fixture
def slurm_two_nodes_launcher(settings, slurm_two_nodes) -> SlurmCluster:
    """Runs go to the two-node test cluster as sbatch jobs."""
    settings.LAUNCHER = "slurm"
    settings.SLURM_RDZV_PORT = 0
    return slurm_two_nodes
