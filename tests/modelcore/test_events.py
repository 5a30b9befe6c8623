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


# Lines the fast parser (orjson) and json read differently, or refuse differently: each must
# come out of read_events as json alone would read it.
TRICKY_LINES = [
    b'{"seq": 1, "time": 1.5, "type": "metric", "step": 3, "values": {"a": 1.0, "b": null, "c": 2}}',
    b'{"seq": 2, "type": "metric", "step": 3, "values": {"a": NaN, "b": Infinity, "c": -Infinity}}',
    b'{"seq": 3, "type": "metric", "step": 3, "values": {"a": 1e999, "b": -1e400}}',
    b'{"seq": 4, "type": "metric", "step": 3, "values": {"a": 123456789012345678901234567890}}',
    b'{"seq": 123456789012345678901234567890, "type": "log", "message": "m"}',
    b'{"seq": 6, "type": "metric", "step": 123456789012345678901234567890, "values": {}}',
    b'{"seq": 7, "type": "metric", "step": -9223372036854775809, "values": {}}',
    b'{"seq": 8, "type": "metric", "step": 9223372036854775808, "values": {}}',
    b'{"seq": 9, "type": "metric", "step": 1000000000000000000, "values": {"a": 1e19}}',
    b'{"seq": 10, "type": "status", "status": "completed", "tokens": 99999999999999999999999}',
    b'{"seq": 11, "type": "log", "message": "\\ud800 and \\udc00", "level": "info"}',
    b'{"seq": 12, "type": "log", "message": "\xed\xa0\x80"}',
    b'{"seq": 13, "type": "metric", "step": 1, "values": {"\\ud800": 1.0, "a\\u0000b": 2.0, "\xc3\xa9": 3.0}}',
    b'\xef\xbb\xbf{"seq": 14, "type": "log", "message": "after a byte order mark"}',
    b'{"seq": 15, "type": "log", "message": "m", "seq": 16}',
    b'{"seq": 17, "type": "metric", "step": 2.0, "values": {"a": true}}',
    b'{"seq": 18, "type": "system", "values": {"a": 1, "b": -0.0, "c": 5e-324, "d": 2.5e-400}}',
    b'{"seq": 19, "time": 1e999, "type": "log", "message": "m"}',
    b'{"seq": 20, "time": 99999999999999999999999, "type": "log", "message": "m"}',
    b'{"seq": 21, "type": "eval", "step": 4, "values": {"eval/x": 0.1000000000000000055511151231257827}}',
    b'{"seq": 22, "type": "log", "message": "m"}\x00',
    b'{"seq": 23, "type": "log", "message": "tab\there"}',
    b'{"seq": 24, "type": "checkpoint", "step": 5, "path": "c", "extra": ' + b"[" * 300 + b"]" * 300 + b"}",
    b'{"seq": 25, "type": "log", "message": "m", "x": ' + b"[" * 1010 + b"]" * 1010 + b"}",
    b"[" * 5000 + b"]" * 5000,
    b'{"seq": 26, "type": "sample", "step": 1, "samples": [{"prompt": "p", "text": "\\u0000t", "n": 1}]}',
    b"null",
    b'"a string"',
    b"12",
    b'  {"seq": 27, "type": "log", "message": "spaces around"}  \r',
]


def _read_all(path: Path) -> tuple[list[str], list[str]]:
    """The events and bad lines of a file, by repr: an int and a float of one value differ, NaN equals itself."""
    batch = read_events(path)
    return [repr(e) for e in batch.events], [repr(b) for b in batch.bad_lines]


def test_the_fast_parser_reads_every_line_as_json_does(tmp_path: Path, monkeypatch) -> None:
    from modelcore import events

    path = tmp_path / EVENTS_FILE
    path.write_bytes(b"\n".join(TRICKY_LINES) + b"\n")
    fast = _read_all(path)
    monkeypatch.setattr(events, "orjson", None)
    assert fast == _read_all(path)
    assert len(fast[0]) > 10 and len(fast[1]) > 10  # both kinds are compared


def test_a_long_integer_in_one_line_sends_only_that_line_to_json(tmp_path: Path, monkeypatch) -> None:
    from modelcore import events

    slow: list[bytes] = []
    parse_slowly = events._parse_slowly
    monkeypatch.setattr(events, "_parse_slowly", lambda line: slow.append(line) or parse_slowly(line))
    with EventWriter(tmp_path) as w:
        w.metric(1, {"a": 1.0})
        w.status("running", tokens=10**25)
        w.metric(2, {"a": 2.0})
    batch = read_events(tmp_path / EVENTS_FILE)
    assert [e["seq"] for e in batch.events] == [1, 2, 3] and batch.events[1]["tokens"] == 10**25
    assert [json.loads(line)["seq"] for line in slow] == [2]
