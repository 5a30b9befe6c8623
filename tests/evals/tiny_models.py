"""Tiny models on disk for evaluator runs in tests: a random HF Llama and a Runwright run checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path


def make_hf_llama(path: Path, seed: int = 0) -> Path:
    """A 2-layer random Llama with a byte-level BPE tokenizer, saved as a Hugging Face folder."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    raw = Tokenizer(models.BPE(unk_token=None))
    raw.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    raw.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<s>", "</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    raw.train_from_iterator(["the quick brown fox jumps over the lazy dog 0123456789 + = ?"] * 4, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>")
    config = LlamaConfig(
        vocab_size=tok.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def make_run_checkpoint(run_dir: Path, config: dict, step: int, seed: int = 0) -> Path:
    """A checkpoint folder laid out as the trainer writes it (weights, config, tokenizer, meta last)."""
    import torch
    from safetensors.torch import save_file

    from modelcore.checkpoint import CHECKPOINTS_DIR, checkpoint_name, model_state_for_save
    from modelcore.config import RunConfig
    from modelcore.model import Transformer
    from modelcore.tokenizer import ByteTokenizer

    cfg = RunConfig.from_dict(config)
    torch.manual_seed(seed)
    model = Transformer(cfg.model)
    path = run_dir / CHECKPOINTS_DIR / checkpoint_name(step)
    path.mkdir(parents=True, exist_ok=True)
    save_file(
        model_state_for_save(model.state_dict(), cfg.model.tie_embeddings), str(path / "model.safetensors")
    )
    (path / "config.json").write_text(cfg.to_json())
    ByteTokenizer().save(path / "tokenizer")
    (path / "meta.json").write_text(
        json.dumps({"step": step, "tokens_seen": 0, "world_size": 1, "time": time.time()})
    )
    return path
