"""Export a checkpoint as a Hugging Face model directory.

``python -m modelcore.export RUN_DIR OUT_DIR [--step N]`` (default: the latest
checkpoint) writes ``config.json``, ``model.safetensors``, ``generation_config.json``
and the tokenizer, loadable with ``transformers.AutoModelForCausalLM.from_pretrained``
and ``AutoTokenizer.from_pretrained``. Dense models become ``LlamaForCausalLM``;
MoE models become ``MixtralForCausalLM`` (per-expert ``w1``/``w2``/``w3`` layout,
which every transformers version reads) when routing is dropless, since Mixtral
has no capacity limit.

The config is written as plain JSON: ``modelcore`` does not import transformers.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from modelcore.config import ModelConfig
from modelcore.model import Transformer
from modelcore.tokenizer import SPECIALS, ByteTokenizer, HFTokenizer

_EXPERT_NAMES = {"gate_proj": "w1", "down_proj": "w2", "up_proj": "w3"}


def hf_config(cfg: ModelConfig, bos_id: int, eos_id: int) -> dict[str, Any]:
    config: dict[str, Any] = {
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.d_model,
        "intermediate_size": cfg.ffn_hidden,
        "num_hidden_layers": cfg.n_layers,
        "num_attention_heads": cfg.n_heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        # transformers < 5 reads rope_theta, >= 5 reads rope_parameters.
        "rope_theta": cfg.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": cfg.rope_theta},
        "tie_word_embeddings": cfg.tie_embeddings,
        "attention_dropout": 0.0,
        "initializer_range": cfg.init_std,
        "bos_token_id": bos_id,
        "eos_token_id": eos_id,
        "use_cache": True,
        "torch_dtype": "float32",
    }
    if not cfg.n_experts:
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **config,
            "attention_bias": False,
            "mlp_bias": False,
            "pretraining_tp": 1,
        }
    if cfg.moe_capacity_factor > 0:
        raise ValueError(
            "model.moe_capacity_factor: Mixtral routes without a capacity limit; only "
            "dropless MoE models (capacity factor 0) export to MixtralForCausalLM"
        )
    return {
        "architectures": ["MixtralForCausalLM"],
        "model_type": "mixtral",
        **config,
        "num_local_experts": cfg.n_experts,
        "num_experts_per_tok": cfg.moe_top_k,
        "router_aux_loss_coef": cfg.moe_aux_loss_coef,
        "output_router_logits": False,
        "router_jitter_noise": 0.0,
        "sliding_window": None,
    }


def hf_state_dict(model: Transformer) -> dict[str, torch.Tensor]:
    """Our parameter names mapped to Hugging Face's (Llama: a ``model.`` prefix; Mixtral: experts)."""
    cfg = model.config
    out = {}
    for name, tensor in model.state_dict().items():
        if name == "lm_head.weight":
            if cfg.tie_embeddings:
                continue  # tied: transformers re-ties it to embed_tokens
            out[name] = tensor
            continue
        parts = name.split(".")
        if cfg.n_experts and len(parts) > 3 and parts[2] == "mlp":
            # layers.i.mlp.gate.weight          -> layers.i.block_sparse_moe.gate.weight
            # layers.i.mlp.experts.j.up_proj.w  -> layers.i.block_sparse_moe.experts.j.w3.weight
            parts[2] = "block_sparse_moe"
            if parts[3] == "experts":
                parts[5] = _EXPERT_NAMES[parts[5]]
        out["model." + ".".join(parts)] = tensor
    return {k: v.detach().to(torch.float32).contiguous().clone() for k, v in out.items()}


def byte_tokenizer_json() -> Any:
    """Our byte tokenizer as a ``tokenizers`` object with the same ids (byte b -> id b)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    # GPT-2's printable stand-ins for the 256 bytes, which ByteLevel pre-tokenisation emits.
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    vocab = {chars[b]: b for b in range(256)}
    vocab.update({tok: 256 + i for i, tok in enumerate(SPECIALS)})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIALS))
    return tok


def export_tokenizer(tokenizer: ByteTokenizer | HFTokenizer, out_dir: Path) -> None:
    if isinstance(tokenizer, ByteTokenizer):
        byte_tokenizer_json().save(str(out_dir / "tokenizer.json"))
        bos, eos, pad = SPECIALS[0], SPECIALS[1], SPECIALS[2]
    else:
        tokenizer.save(out_dir)
        (out_dir / "runwright_tokenizer.json").unlink(missing_ok=True)
        raw = tokenizer._tok  # noqa: SLF001 - the wrapped tokenizers object
        bos, eos, pad = raw.id_to_token(tokenizer.bos_id), raw.id_to_token(tokenizer.eos_id), None
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": pad or eos,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 1_000_000,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    (out_dir / "special_tokens_map.json").write_text(
        json.dumps({"bos_token": bos, "eos_token": eos, "pad_token": pad or eos}, indent=2)
    )


def export_checkpoint(run_dir: str | Path, out_dir: str | Path, step: int | None = None) -> Path:
    """Write the Hugging Face directory for a run's checkpoint; returns ``out_dir``."""
    from modelcore.checkpoint import load_checkpoint

    model, config, tokenizer = load_checkpoint(run_dir, step)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf = hf_config(model.config, tokenizer.bos_id, tokenizer.eos_id)
    (out / "config.json").write_text(json.dumps(hf, indent=2))
    (out / "generation_config.json").write_text(
        json.dumps({"bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id}, indent=2)
    )
    save_file(hf_state_dict(model), str(out / "model.safetensors"), metadata={"format": "pt"})
    export_tokenizer(tokenizer, out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelcore.export", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--step", type=int, default=None, help="Checkpoint step (default: the latest).")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.run_dir, args.out_dir, args.step)
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
