"""The ``launcher`` config section: Slurm names and layouts refused with the field to fix."""

from __future__ import annotations

import pytest

from modelcore.config import ConfigError, RunConfig


def errors(launcher: dict, parallel: dict | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        RunConfig.from_dict({"launcher": launcher, "parallel": parallel or {}})
    return exc.value.errors


@pytest.mark.parametrize(
    "hostile", ["gpu; rm -rf /", "a b", "$(id)", "`x`", "p\nq", "--partition=x", "x" * 65, "ü"]
)
@pytest.mark.parametrize("name", ["partition", "account", "qos"])
def test_slurm_names_other_than_plain_characters_are_refused(name, hostile):
    assert "Slurm name" in errors({name: hostile})[f"launcher.{name}"]


def test_nodes_must_divide_the_processes():
    assert errors({"nodes": 3}, {"num_processes": 4}) == {
        "launcher.nodes": "must divide parallel.num_processes (4): each node runs an equal share"
    }


def test_limits_are_field_errors():
    found = errors({"nodes": 0, "time_limit_min": -1})
    assert set(found) == {"launcher.nodes", "launcher.time_limit_min"}


def test_a_valid_launcher_section_round_trips():
    config = RunConfig.from_dict(
        {
            "parallel": {"num_processes": 4},
            "launcher": {"nodes": 2, "partition": "gpu-a100", "account": "ml.team", "qos": "high_1"},
        }
    )
    assert RunConfig.from_dict(config.to_dict()) == config
    assert config.launcher.nodes == 2 and config.launcher.time_limit_min == 0
