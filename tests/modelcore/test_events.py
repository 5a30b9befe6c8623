"""events.jsonl: writer and reader, torn lines, sequence numbers across resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelcore.events import EVENTS_FILE, EventWriter, read_events


def test_written_events_read_back_in_order(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as w:
        w.status("running", info={"num_params": 10})
        w.metric(5, {"train/loss": 3.5, "train/lr": 1e-3})
        w.log("hello")
        w.checkpoint(5, "checkpoints/step_000005")
        w.status("completed")
    batch = read_events(tmp_path / EVENTS_FILE)
    assert [e["type"] for e in batch.events] == ["status", "metric", "log", "checkpoint", "status"]
    assert [e["seq"] for e in batch.events] == [1, 2, 3, 4, 5]
    assert batch.events[1]["values"] == {"train/loss": 3.5, "train/lr": 1e-3}
    assert batch.offset == (tmp_path / EVENTS_FILE).stat().st_size


def test_torn_last_line_is_left_for_the_next_read(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as w:
        w.metric(1, {"train/loss": 2.0})
    path = tmp_path / EVENTS_FILE
    whole = path.read_bytes()
    torn = json.dumps({"seq": 2, "type": "metric", "step": 2, "values": {"train/loss": 1.5}}).encode()
    path.write_bytes(whole + torn[:20])
    first = read_events(path)
    assert len(first.events) == 1 and first.offset == len(whole)
    path.write_bytes(whole + torn + b"\n")
    second = read_events(path, first.offset)
    assert [e["step"] for e in second.events] == [2]


def test_nonfinite_metrics_become_null_and_bad_types_are_refused(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as w:
        w.metric(1, {"train/loss": float("nan")})
        with pytest.raises(ValueError):
            w.write("banana")
    assert read_events(tmp_path / EVENTS_FILE).events[0]["values"] == {"train/loss": None}


def test_sequence_continues_when_a_run_resumes(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as w:
        w.log("one")
        w.log("two")
    with EventWriter(tmp_path) as w:
        assert w.log("three")["seq"] == 3
