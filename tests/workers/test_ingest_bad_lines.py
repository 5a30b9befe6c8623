"""A bad line in the middle of a real events file: skipped with a warning, counted, training goes on.

Each file is written by modelcore.events' writer, with one bad line appended between two
writers (as a crash, a disk fault or a foreign writer would leave it), and ingested by the
supervisor's own loop round (``Supervisor._tick``) while a stand-in trainer process lives.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

import pytest
from django.db import OperationalError

from modelcore.events import EVENTS_FILE, MAX_LINE_BYTES, EventWriter
from webapp.metrics.models import MetricPoint
from webapp.runs import transitions
from webapp.runs.models import Run, RunLog, RunStatus
from workers import ingest
from workers.ingest import SKIP_WARNING, SKIPPED_KEY, UNSEQUENCED_LOG_BASE
from workers.supervisor import Supervisor

GOOD_STEPS = list(range(1, 11))  # steps 1-5 before the bad line, 6-10 after it


def bad(seq: int, **fields) -> bytes:
    return json.dumps({"seq": seq, "time": 1.5, **fields}).encode()


# name -> (the bad line, given the seq the writer would give it; has it that seq; words of the reason)
BAD_LINES = {
    "step 1e999": (
        lambda s: bad(s, type="metric", values={"train/loss": 1.0}).replace(b"}}", b'}, "step": 1e999}'),
        True,
        "step must be a whole number",
    ),
    "step past bigint": (
        lambda s: bad(s, type="metric", step=2**63, values={"train/loss": 1.0}),
        True,
        "step must be a whole number",
    ),
    "step of 400 digits": (
        lambda s: bad(s, type="metric", step=10**400, values={"a": 1.0}),
        True,
        "401-digit integer",
    ),
    "step NaN": (
        lambda s: bad(s, type="metric", values={}).replace(b"}}", b'}, "step": NaN}'),
        True,
        "got nan",
    ),
    "negative step": (lambda s: bad(s, type="checkpoint", step=-3, path="c"), True, "step must be"),
    "step a string": (
        lambda s: bad(s, type="metric", step="abc", values={"train/loss": 1.0}),
        True,
        'got "abc"',
    ),
    "values a list": (
        lambda s: bad(s, type="metric", step=5, values=[1.0, 2.0]),
        True,
        "values must be an object",
    ),
    "value a string": (
        lambda s: bad(s, type="system", values={"cpu/util": "high"}),
        True,
        'values["cpu/util"]',
    ),
    "value a list": (lambda s: bad(s, type="eval", step=5, values={"eval/x": [1]}), True, "a JSON array"),
    "message a list": (lambda s: bad(s, type="log", message=["a"]), True, "message must be a string"),
    "status a number": (lambda s: bad(s, type="status", status=3), True, "status must be a string"),
    "unknown type": (lambda s: bad(s, type="banana"), True, "type must be one of"),
    "seq a string": (
        lambda s: json.dumps({"seq": "x", "type": "log", "message": "m"}).encode(),
        False,
        "seq must be",
    ),
    "time a list": (lambda s: bad(s, type="log", message="m").replace(b"1.5", b"[1]"), True, "time must be"),
    "a JSON array": (lambda s: b"[1, 2, 3]", False, "a JSON array, not an object"),
    "a JSON string": (lambda s: b'"step"', False, "a JSON string, not an object"),
    "not JSON": (lambda s: b"Traceback (most recent call last): oops {{{", False, "not valid JSON"),
    "torn then glued": (lambda s: b'{"seq": %d, "time": 1.5, "type": "met{"seq"' % s, True, "not valid JSON"),
    "invalid UTF-8": (
        lambda s: b'{"seq": %d, "time": 1.5, "type": "log", "message": "\xff\xfe"}' % s,
        True,
        "not valid UTF-8",
    ),
    "deeply nested": (lambda s: b"[" * 100_000 + b"]" * 100_000, False, "not valid JSON"),
    "over the size limit": (
        lambda s: bad(s, type="log", message="x" * (MAX_LINE_BYTES + 10)),
        True,
        "over the 1048576-byte limit",
    ),
}


def write_file_with_bad_line(run_dir, line_for) -> tuple[int, int | None]:
    """Steps 1-5, a log, the bad line, steps 6-10 and a log; returns the bad line's offset and seq."""
    with EventWriter(run_dir) as events:
        events.status("running")
        for step in GOOD_STEPS[:5]:
            events.metric(step, {"train/loss": 10.0 / step, "train/lr": 0.001})
        events.log("before the bad line")
        seq = events.system({"cpu/util": 0.5})["seq"] + 1
    path = run_dir / EVENTS_FILE
    offset = path.stat().st_size
    with open(path, "ab") as f:
        f.write(line_for(seq) + b"\n")
    with EventWriter(run_dir) as events:  # a resumed trainer, or the same one after a hiccup
        for step in GOOD_STEPS[5:]:
            events.metric(step, {"train/loss": 10.0 / step, "train/lr": 0.001})
        events.log("after the bad line")
    return offset, seq


@pytest.fixture
def supervised(make_run):
    """A claimed run and a Supervisor whose "trainer" is a live process in its own group."""
    run = transitions.claim_for_launch(make_run().id, "test-worker")
    run.run_dir.mkdir(parents=True)
    trainer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    supervisor = Supervisor(run, poll_seconds=0.01)
    supervisor.proc = trainer
    yield supervisor
    trainer.kill()
    trainer.wait()


def ingest_round(supervisor: Supervisor) -> None:
    """What the supervisor's loop does each round while the trainer lives."""
    supervisor._tick(final=False)
    assert supervisor.stop.reason == "" and supervisor.stop.sent_at is None  # no SIGTERM was sent
    assert supervisor.proc.poll() is None  # the trainer still runs


def assert_good_rows_once(run: Run) -> None:
    losses = list(
        MetricPoint.objects.filter(run=run, key="train/loss").order_by("step").values_list("step", "value")
    )
    assert losses == [(s, pytest.approx(10.0 / s)) for s in GOOD_STEPS]  # each exactly once, none lost
    assert MetricPoint.objects.filter(run=run, key="train/lr").count() == len(GOOD_STEPS)
    messages = list(RunLog.objects.filter(run=run).exclude(level="warning").values_list("message", flat=True))
    assert messages == ["before the bad line", "after the bad line"]


def skip_count(run: Run) -> float:
    return (
        MetricPoint.objects.filter(run=run, key=SKIPPED_KEY)
        .order_by("-step")
        .values_list("value", flat=True)[0]
    )


@pytest.mark.parametrize("kind", list(BAD_LINES))
def test_a_bad_line_mid_file_is_skipped_with_a_warning_and_training_goes_on(supervised, kind):
    line_for, keeps_seq, reason = BAD_LINES[kind]
    run = supervised.run
    offset, seq = write_file_with_bad_line(run.run_dir, line_for)

    ingest_round(supervised)

    run.refresh_from_db()
    assert run.status == RunStatus.RUNNING and run.step == 10
    assert run.events_offset == (run.run_dir / EVENTS_FILE).stat().st_size
    assert_good_rows_once(run)
    [warning] = RunLog.objects.filter(run=run, level="warning")
    assert warning.message.startswith(SKIP_WARNING)
    assert f"at byte {offset} of events.jsonl" in warning.message and reason in warning.message
    assert warning.seq == (seq if keeps_seq else UNSEQUENCED_LOG_BASE + offset)
    if keeps_seq:
        assert f"(seq {seq})" in warning.message
    assert skip_count(run) == 1.0


def test_every_kind_of_bad_line_in_one_file_is_counted_once_even_when_read_again(supervised):
    run = supervised.run
    with EventWriter(run.run_dir) as events:
        events.status("running")
    path = run.run_dir / EVENTS_FILE
    for i, (line_for, _, _) in enumerate(BAD_LINES.values(), start=1):
        with EventWriter(run.run_dir) as events:
            seq = events.metric(i, {"train/loss": 1.0 / i})["seq"] + 1
        with open(path, "ab") as f:
            f.write(line_for(seq) + b"\n")
    with EventWriter(run.run_dir) as events:
        events.log("the end")

    ingest_round(supervised)
    run.refresh_from_db()
    n = len(BAD_LINES)
    assert skip_count(run) == n
    assert RunLog.objects.filter(run=run, level="warning").count() == n
    assert sorted(
        MetricPoint.objects.filter(run=run, key="train/loss").values_list("step", flat=True)
    ) == list(range(1, n + 1))
    before = sorted(RunLog.objects.filter(run=run).values_list("seq", "message"))

    # As after a crash between writing rows and committing the offset: read it all again.
    Run.objects.filter(pk=run.pk).update(events_offset=0)
    run.events_offset = 0
    ingest_round(supervised)
    assert skip_count(run) == n
    assert sorted(RunLog.objects.filter(run=run).values_list("seq", "message")) == before


def test_nan_and_infinite_values_are_stored_as_gaps_not_skipped(supervised):
    """A NaN loss is a signal: its point is kept (as null, which charts show as a gap)."""
    run = supervised.run
    with EventWriter(run.run_dir) as events:
        events.metric(1, {"train/loss": 2.0})
        events.metric(2, {"train/loss": float("nan"), "train/lr": 0.001})  # the writer logs null
    with open(run.run_dir / EVENTS_FILE, "ab") as f:  # another writer's literals
        f.write(
            b'{"seq": 3, "time": 1.0, "type": "metric", "step": 3, "values": {"train/loss": NaN, "x": Infinity, "y": 1e999, "z": %d}}\n'
            % 10**400
        )
    ingest_round(supervised)
    run.refresh_from_db()
    assert sorted(MetricPoint.objects.filter(run=run).values_list("key", "step", "value")) == [
        ("train/loss", 1, 2.0),
        ("train/loss", 2, None),
        ("train/loss", 3, None),
        ("train/lr", 2, 0.001),
        ("x", 3, None),
        ("y", 3, None),
        ("z", 3, None),
    ]
    assert run.last_loss == 2.0 and run.step == 3  # the last finite loss
    assert not RunLog.objects.filter(run=run, level="warning").exists()


def test_text_no_database_can_store_is_repaired_not_skipped(supervised):
    run = supervised.run
    with EventWriter(run.run_dir) as events:
        events.log("a NUL \x00 here")
    with open(run.run_dir / EVENTS_FILE, "ab") as f:
        f.write(b'{"seq": 2, "time": 1.0, "type": "log", "message": "half a pair \\ud800"}\n')
    ingest_round(supervised)
    assert list(RunLog.objects.filter(run=run).values_list("message", flat=True)) == [
        "a NUL \ufffd here",
        "half a pair ?",
    ]


def test_a_line_the_database_refuses_is_skipped_and_its_neighbours_kept(supervised, monkeypatch):
    """Past the reader's checks, a batch that cannot be stored is stored line by line."""
    run = supervised.run
    real_write = ingest.write_points

    def refuse_one_key(run_id, points, **options):
        points = list(points)
        if any(p.key == "refused" for p in points):
            raise ValueError("a value this store cannot take")
        return real_write(run_id, points, **options)

    monkeypatch.setattr(ingest, "write_points", refuse_one_key)
    with EventWriter(run.run_dir) as events:
        events.metric(1, {"train/loss": 1.0})
        refused = events.metric(2, {"refused": 1.0})
        events.metric(3, {"train/loss": 0.5})
        events.log("still here")
    ingest_round(supervised)
    run.refresh_from_db()
    assert sorted(MetricPoint.objects.filter(run=run, key="train/loss").values_list("step", flat=True)) == [
        1,
        3,
    ]
    [warning] = RunLog.objects.filter(run=run, level="warning")
    assert warning.seq == refused["seq"] and "could not be stored (ValueError" in warning.message
    assert RunLog.objects.filter(run=run, message="still here").exists()
    assert run.events_offset == (run.run_dir / EVENTS_FILE).stat().st_size


def test_a_database_outage_is_retried_without_skipping_anything(supervised, monkeypatch):
    run = supervised.run
    real_write = ingest.write_points
    outage = {"left": 2}

    def flaky(run_id, points, **options):
        if outage["left"]:
            outage["left"] -= 1
            raise OperationalError("server closed the connection unexpectedly")
        return real_write(run_id, points, **options)

    monkeypatch.setattr(ingest, "write_points", flaky)
    with EventWriter(run.run_dir) as events:
        for step in GOOD_STEPS:
            events.metric(step, {"train/loss": 10.0 / step, "train/lr": 0.001})
    ingest_round(supervised)
    ingest_round(supervised)
    assert MetricPoint.objects.filter(run=run).count() == 0  # nothing half-written, offset not moved
    ingest_round(supervised)
    assert MetricPoint.objects.filter(run=run, key="train/loss").count() == len(GOOD_STEPS)
    assert not RunLog.objects.filter(run=run).exists()


def test_an_unreadable_events_file_waits_without_stopping_the_trainer(supervised):
    run = supervised.run
    (run.run_dir / EVENTS_FILE).mkdir()  # reading it fails with an OSError
    ingest_round(supervised)
    run.refresh_from_db()
    assert run.events_offset == 0 and run.status == RunStatus.STARTING


def test_the_stand_in_trainer_is_really_running(supervised):
    """The fixture's trainer is a live group that a SIGTERM would end: the checks above can fail."""
    supervised.process.signal_group(signal.SIGTERM)
    assert supervised.proc.wait(timeout=10) == -signal.SIGTERM
