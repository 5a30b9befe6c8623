"""``python -m modelcore.sample_job``: pieces of text as tokens come, whole characters only."""

from __future__ import annotations

import json

import torch

from modelcore.checkpoint import save_weights_checkpoint
from modelcore.config import resolve
from modelcore.generate import generate
from modelcore.model import Transformer
from modelcore.sample_job import TextStream, main
from modelcore.tokenizer import ByteTokenizer


def test_text_stream_holds_back_a_split_character():
    tok = ByteTokenizer()
    stream = TextStream(tok.decode)
    pieces = [stream.feed(b) for b in "aé🐍".encode()]
    assert pieces == ["a", "", "é", "", "", "", "🐍"]


def test_entry_point_prints_each_piece_then_the_whole_text(tmp_path, capsys):
    cfg = resolve("tiny-cpu")
    torch.manual_seed(0)
    model = Transformer(cfg.model).eval()
    save_weights_checkpoint(tmp_path / "run", 3, model, cfg, ByteTokenizer())
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("Hello", encoding="utf-8")
    argv = [str(tmp_path / "run"), "--step", "3", "--prompt-file", str(prompt), "--max-new-tokens", "12"]
    assert main([*argv, "--temperature", "0"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[-1]["event"] == "done"
    expected = generate(model, ByteTokenizer(), "Hello", max_new_tokens=12, temperature=0.0)
    assert events[-1]["text"] == expected
    streamed = "".join(e["text"] for e in events if e["event"] == "token")
    assert expected.startswith(streamed) and len([e for e in events if e["event"] == "token"]) > 1


def test_missing_checkpoint_is_an_error_event(tmp_path, capsys):
    prompt = tmp_path / "prompt.txt"
    prompt.write_text("x", encoding="utf-8")
    assert main([str(tmp_path / "none"), "--step", "1", "--prompt-file", str(prompt)]) == 2
    event = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert event["event"] == "error" and "no checkpoints" in event["error"]
