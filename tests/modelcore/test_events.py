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


def test_a_line_over_the_size_limit_is_skipped_without_reading_it_whole(tmp_path: Path) -> None:
    import tracemalloc

    path = tmp_path / EVENTS_FILE
    with EventWriter(tmp_path) as w:
        w.metric(1, {"train/loss": 2.0})
    huge_at = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "type": "log", "message": "' + b"x" * (40 << 20) + b'"}\n')
    with EventWriter(tmp_path) as w:
        assert w.metric(3, {"train/loss": 1.0})["seq"] == 3  # the long line's seq is not reused
    events, bad_lines, offset = [], [], 0
    tracemalloc.start()
    try:
        while offset < path.stat().st_size:  # as the supervisor's rounds do
            batch = read_events(path, offset)
            events, bad_lines, offset = events + batch.events, bad_lines + batch.bad_lines, batch.offset
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [e["seq"] for e in events] == [1, 3]
    [bad] = bad_lines
    assert (bad.offset, bad.seq) == (huge_at, 2) and "over the 1048576-byte limit" in bad.reason
    assert peak < 16 << 20  # one 8 MiB read and a 1 MiB scan block, never the 40 MiB line


def test_bad_lines_are_reported_with_offset_seq_and_reason_and_the_rest_read(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    with EventWriter(tmp_path) as w:
        w.metric(1, {"train/loss": 2.0})
    at = path.stat().st_size
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "time": 1.0, "type": "metric", "step": 1e999, "values": {}}\n')
    with EventWriter(tmp_path) as w:
        w.metric(3, {"train/loss": 1.0})
    batch = read_events(path)
    assert [e["step"] for e in batch.events] == [1, 3] and batch.offset == path.stat().st_size
    [bad] = batch.bad_lines
    assert (bad.offset, bad.seq) == (at, 2) and bad.reason.startswith("step must be a whole number")


def test_a_writer_after_a_crash_ends_the_torn_line_and_continues_its_seq(tmp_path: Path) -> None:
    path = tmp_path / EVENTS_FILE
    with EventWriter(tmp_path) as w:
        w.log("one")
    with open(path, "ab") as f:
        f.write(b'{"seq": 2, "time": 1.0, "type": "lo')  # the crash
    with EventWriter(tmp_path) as w:
        w.log("three")
    batch = read_events(path)
    assert [(e["seq"], e["message"]) for e in batch.events] == [(1, "one"), (3, "three")]
    assert [b.seq for b in batch.bad_lines] == [2]


def test_the_writer_shortens_a_huge_traceback_to_fit_a_line(tmp_path: Path) -> None:
    with EventWriter(tmp_path) as w:
        w.status("failed", error="frame\n" * 400_000 + "RuntimeError: the end")
    [event] = read_events(tmp_path / EVENTS_FILE).events
    assert event["error"].startswith("[…] ") and event["error"].endswith("RuntimeError: the end")
