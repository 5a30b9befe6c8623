"""The run config schema: presets build, bad input is rejected with the field path."""

from __future__ import annotations

import pytest

from modelcore.config import (
    PRESETS,
    ConfigError,
    RunConfig,
    json_schema,
    parse_assignments,
    preset,
    resolve,
)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_and_round_trips(name: str) -> None:
    cfg = preset(name)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.model.num_params() > 0
    assert cfg.model.flops_per_token(cfg.data.seq_len) > 6 * cfg.model.num_active_params()


@pytest.mark.parametrize(
    ("overrides", "path"),
    [
        ({"model": {"n_heads": 5}}, "model.n_heads"),
        ({"model": {"n_kv_heads": 3}}, "model.n_kv_heads"),
        ({"model": {"n_experts": 2, "moe_top_k": 3}}, "model.moe_top_k"),
        ({"model": {"d_model": "big"}}, "model.d_model"),
        ({"model": {"nope": 1}}, "model.nope"),
        ({"optim": {"schedule": "linear"}}, "optim.schedule"),
        ({"optim": {"lr": -1}}, "optim.lr"),
        ({"data": {"seq_len": 100000}}, "data.seq_len"),
        ({"train": {"max_steps": 0}}, "train.max_steps"),
        ({"bogus": {}}, "bogus"),
    ],
)
def test_bad_config_names_the_field(overrides: dict, path: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve("tiny-cpu", overrides)
    assert path in info.value.errors
    assert isinstance(info.value, ValueError)


def test_all_errors_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        RunConfig.from_dict({"model": {"n_layers": 0}, "optim": {"lr": "fast"}})
    assert {"model.n_layers", "optim.lr"} <= set(info.value.errors)


def test_unknown_preset_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        preset("gpt-17")
    assert "preset" in info.value.errors


def test_parse_assignments_reads_json_values_and_strings() -> None:
    parsed = parse_assignments(["model.n_layers=4", "model.tie_embeddings=false", "data.corpus=/tmp/x.txt"])
    assert parsed == {"model": {"n_layers": 4, "tie_embeddings": False}, "data": {"corpus": "/tmp/x.txt"}}
    with pytest.raises(ConfigError):
        parse_assignments(["n_layers=4"])


def test_json_schema_lists_every_section() -> None:
    schema = json_schema()
    assert set(schema["properties"]) == {
        "model",
        "data",
        "optim",
        "parallel",
        "train",
        "eval",
        "resources",
        "launcher",
    }
    assert schema["properties"]["optim"]["properties"]["schedule"]["enum"] == ["cosine", "wsd", "constant"]


def test_config_and_events_do_not_import_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, modelcore, modelcore.config, modelcore.events, modelcore.launch; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
