"""Initial weights for fine-tuning or continued pretraining (``train.init_from``).

The source is a Runwright run directory (its latest checkpoint), one of its
checkpoint directories, or a local Hugging Face ``LlamaForCausalLM`` /
``MixtralForCausalLM`` directory (``config.json`` plus ``*.safetensors``). Names are mapped to ours and every shape is checked, so a model
that does not fit fails with the field to change, not with a torch size error.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from modelcore.checkpoint import list_checkpoints, read_model_state
from modelcore.config import ModelConfig, RunConfig
from modelcore.model import Transformer

_EXPERT_NAMES = {"w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
# Hugging Face config key -> (our field, how ours is computed from the config)
_HF_FIELDS = {
    "hidden_size": ("model.d_model", lambda m: m.d_model),
    "num_hidden_layers": ("model.n_layers", lambda m: m.n_layers),
    "num_attention_heads": ("model.n_heads", lambda m: m.n_heads),
    "num_key_value_heads": ("model.n_kv_heads", lambda m: m.kv_heads),
    "intermediate_size": ("model.d_ff", lambda m: m.ffn_hidden),
    "vocab_size": ("model.vocab_size", lambda m: m.vocab_size),
    "num_local_experts": ("model.n_experts", lambda m: m.n_experts),
}


def _fail(source: Path, problems: list[str]) -> ValueError:
    return ValueError(f"train.init_from: {source} does not fit this model: " + "; ".join(problems))


def hf_to_ours(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Hugging Face Llama/Mixtral parameter names to ours (per-expert and fused expert layouts)."""
    out: dict[str, torch.Tensor] = {}
    for name, tensor in state.items():
        if name.endswith("rotary_emb.inv_freq"):
            continue
        key = name.removeprefix("model.").replace(".block_sparse_moe.", ".mlp.")
        parts = key.split(".")
        if len(parts) == 7 and parts[3] == "experts" and parts[5] in _EXPERT_NAMES:
            # layers.i.mlp.experts.j.w1.weight: the per-expert layout of Mixtral on the Hub
            parts[5] = _EXPERT_NAMES[parts[5]]
            out[".".join(parts)] = tensor
        elif key.endswith("mlp.experts.gate_up_proj"):
            # transformers >= 5 fuses the experts: (E, 2F, D) gate then up, and (E, D, F) down
            prefix = key.removesuffix("gate_up_proj")
            gate, up = tensor.chunk(2, dim=1)
            for e in range(tensor.shape[0]):
                out[f"{prefix}{e}.gate_proj.weight"] = gate[e]
                out[f"{prefix}{e}.up_proj.weight"] = up[e]
        elif key.endswith("mlp.experts.down_proj"):
            prefix = key.removesuffix("down_proj")
            for e in range(tensor.shape[0]):
                out[f"{prefix}{e}.down_proj.weight"] = tensor[e]
        else:
            out[key] = tensor
    return out


def read_hf_directory(path: Path, cfg: ModelConfig) -> dict[str, torch.Tensor]:
    hf_cfg = json.loads((path / "config.json").read_text())
    problems = [
        f"{hf_key} is {hf_cfg[hf_key]} there but {ours} is {value(cfg)} here"
        for hf_key, (ours, value) in _HF_FIELDS.items()
        if hf_key in hf_cfg and hf_cfg[hf_key] != value(cfg)
    ]
    if problems:
        raise _fail(path, problems)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise _fail(path, ["no *.safetensors weights (convert .bin checkpoints with transformers first)"])
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return hf_to_ours(state)


def initial_state(source: str | Path, cfg: RunConfig) -> dict[str, torch.Tensor]:
    """Our-named weights from ``source`` (a run directory, one of its checkpoints, or a Hugging Face directory)."""
    path = Path(source).expanduser()
    checkpoints = list_checkpoints(path)
    if checkpoints:
        path = checkpoints[-1][1]  # a run directory starts from its latest checkpoint
    if (path / "meta.json").exists():  # a checkpoint directory (what run:<id>:<step> names on the web)
        saved = json.loads((path / "config.json").read_text())["model"]
        return read_model_state(path, saved["tie_embeddings"])
    if (path / "config.json").exists():
        return read_hf_directory(path, cfg.model)
    raise ValueError(
        f"train.init_from: {path} is neither a Runwright run directory with checkpoints "
        "nor a Hugging Face model directory (config.json + *.safetensors)"
    )


def load_initial_weights(model: Transformer, source: str | Path, cfg: RunConfig) -> None:
    state = initial_state(source, cfg)
    ours = model.state_dict()
    if "lm_head.weight" not in state and "embed_tokens.weight" in state:
        state["lm_head.weight"] = state["embed_tokens.weight"]  # source was tied
    problems = [
        f"{k} has shape {tuple(state[k].shape)} there but {tuple(v.shape)} here"
        for k, v in ours.items()
        if k in state and state[k].shape != v.shape
    ]
    missing = sorted(set(ours) - set(state))
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}")
    if problems:
        raise _fail(Path(source), problems)
    with torch.no_grad():
        for k, v in ours.items():
            v.copy_(state[k])
