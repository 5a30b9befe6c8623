"""Event ingestion: new lines of ``events.jsonl`` into the database, then onto the live channel.

Each batch is written in one transaction together with the byte offset just
past it, so the database never holds rows of events it will not re-read or an
offset past events it never stored. After a crash the supervisor re-reads from
the committed offset and the upserts replace the rows they already wrote.

A bad line never stops ingestion, and so never the run: the reader
(modelcore.events) hands it back as a ``BadLine``, and it becomes a warning in
the run's log (naming its byte offset, its seq and what is wrong) and one more
on the run's ``ingest/skipped_events`` series, while the lines around it are
stored as usual. ``ingest_new_events`` raises only database errors that are
worth retrying (a lost connection, a locked database); anything else that goes
wrong while storing a batch is narrowed down to the line that causes it, which
is skipped the same way.

A read of a busy file (up to ``READ_BYTES``) is parsed and stored in pieces of
``PIECE_BYTES``, in its one transaction, the next piece parsed while the database stores
the points of the one before (``_NextPiece``).

After a batch is stored, ``announce`` publishes the live update built from the rows
just written (``webapp.live``: the same payload a live page's stream reads from the
database), and ``EventsWatch`` wakes the tail as soon as the trainer appends a line
instead of after a fixed sleep: together they are most of a live page's latency.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import InterfaceError, OperationalError, transaction

from modelcore.events import FINAL_STATUSES, BadLine, EventBatch, read_events
from webapp import live
from webapp.live import LiveRows
from webapp.metrics.services import LatestPoints, Point, WrittenPoints, write_points
from webapp.runs import transitions
from webapp.runs.models import Run, RunLog, RunStatus

log = logging.getLogger(__name__)

LOSS_KEY = "train/loss"
SKIPPED_KEY = "ingest/skipped_events"  # how many event lines of the run were skipped, by step
SKIP_WARNING = "Skipped event line"  # the start of every skip warning in the run's log
# A line that shows no seq (not JSON, not written by the trainer's writer) has its warning
# logged under a seq past any a trainer writes, derived from its byte offset, so re-reading
# the line replaces its warning instead of adding a second. (Live pages follow log rows by
# id, so this never hides later lines; the run page's tail shows such a warning last.)
UNSEQUENCED_LOG_BASE = 2**62
# Worth retrying as they are: the database is unreachable or busy, not the data wrong.
RETRYABLE_DB_ERRORS = (OperationalError, InterfaceError)
# How often EventsWatch looks at the file's size: a stat() is microseconds, and this is
# the most a line waits before the tail reads it.
WATCH_SECONDS = 0.01
# The most one call reads (a supervisor's round stays bounded: ~150k points of a busy trainer).
READ_BYTES = 8 * 1024 * 1024
# A longer read is parsed and stored in pieces of this size (~18k points), the next parsed
# while the database stores the one before (``_NextPiece``). Half the size cost more round
# trips than it overlapped (measured with a commit a piece, since merged).
PIECE_BYTES = 1024 * 1024


@dataclass
class Batch:
    """What one read of the event file held, parsed into rows."""

    offset: int
    # The read's points, until stored: a commit empties it (the batch's caller holds it while
    # the cycle collector runs again, and it may be 100k points) and counts them here.
    points: LatestPoints = field(default_factory=LatestPoints)
    stored_points: int = 0
    logs: list[dict[str, Any]] = field(default_factory=list)  # the trainer's, and skip warnings
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)  # train.sample_every's events
    step: int | None = None
    last_loss: float | None = None
    running: bool = False
    final_status: dict[str, Any] | None = None
    bad_lines: list[BadLine] = field(default_factory=list)
    lost_ownership: bool = False
    live: LiveRows | None = None  # set by a commit; None: streams catch up from the database

    @property
    def skipped(self) -> int:
        return len(self.bad_lines)

    def absorb(self, later: Batch) -> None:
        """Fold the batch of the lines after ours into this one (one line at a time, below)."""
        self.offset = later.offset
        self.points = self.points + later.points
        self.stored_points += later.stored_points
        self.logs += later.logs
        self.checkpoints += later.checkpoints
        self.samples += later.samples
        self.step = later.step if later.step is not None else self.step
        self.last_loss = later.last_loss if later.last_loss is not None else self.last_loss
        self.running = self.running or later.running
        self.final_status = later.final_status or self.final_status
        self.bad_lines += later.bad_lines
        self.lost_ownership = self.lost_ownership or later.lost_ownership
        self.live = None  # rows of several commits: live pages read them from the database


def parse_events(read: EventBatch, current_step: int) -> Batch:
    """Turn checked events into rows. ``current_step`` places system stats, which carry no step."""
    batch = Batch(offset=read.offset)
    step = current_step
    add_points = batch.points.add
    for e, (start, end) in zip(read.events, read.spans, strict=True):
        try:
            if e["type"] == "metric":  # most lines: _add_event's first case, without the call
                step = e["step"]
                values = e["values"]
                add_points(step, values, e.get("time") or 0.0)
                batch.step = step
                loss = values.get(LOSS_KEY)
                if loss is not None:
                    batch.last_loss = loss
            else:
                step = _add_event(batch, e, step)
        except Exception as exc:  # the reader checked the event; this is the net under that check
            batch.bad_lines.append(
                BadLine(start, end, e.get("seq"), f"could not be parsed ({type(exc).__name__}: {exc})", e)
            )
    for bad in read.bad_lines:
        batch.bad_lines.append(bad)
    batch.bad_lines.sort(key=lambda b: b.offset)
    batch.logs += [skip_warning(bad) for bad in batch.bad_lines]
    return batch


def _add_event(batch: Batch, e: dict[str, Any], step: int) -> int:
    kind, t = e["type"], e.get("time") or 0.0
    if kind in ("metric", "eval"):
        step = e["step"]
        batch.points.add(step, e["values"], t)
        batch.step = step
        if e["values"].get(LOSS_KEY) is not None:
            batch.last_loss = e["values"][LOSS_KEY]
    elif kind == "system":
        # Stats are sampled in time, not per step: the latest sample within a step wins.
        batch.points.add(step, e["values"], t)
    elif kind == "log":
        batch.logs.append(e)
    elif kind == "checkpoint":
        batch.checkpoints.append(e)
    elif kind == "sample":
        batch.samples.append(e)
    elif kind == "status":
        if e["status"] == RunStatus.RUNNING:
            batch.running = True
        elif e["status"] in FINAL_STATUSES:
            batch.final_status = e
    return step


def skip_warning(bad: BadLine) -> dict[str, Any]:
    """The run-log entry (a log event's fields) that says which line was skipped and why."""
    event = bad.event or {}
    kind = event.get("type") if isinstance(event.get("type"), str) else None
    what = f"{SKIP_WARNING} ({kind} event)" if kind else SKIP_WARNING
    seq = f"seq {bad.seq}" if bad.seq is not None else "no seq"
    stamp = event.get("time")
    return {
        "seq": bad.seq if bad.seq is not None else UNSEQUENCED_LOG_BASE + bad.offset,
        "time": stamp if isinstance(stamp, float) and math.isfinite(stamp) else time.time(),
        "level": "warning",
        "message": f"{what} at byte {bad.offset} of events.jsonl ({seq}): {bad.reason}. "
        "The line was left out; training and ingestion go on.",
    }


def ingest_new_events(run: Run, path: Path) -> Batch | None:
    """Read events after ``run.events_offset`` and commit them with the new offset.

    Returns the batch (``lost_ownership`` set and nothing written when the run
    is no longer this attempt's), or None when there was nothing new. Updates
    ``run`` in memory (offset, step, last_loss, status) on success. Raises only
    ``RETRYABLE_DB_ERRORS``: the caller tries again later from the committed offset.
    """
    with _cyclic_gc_paused():  # until the read's events are freed, on _ingest's return
        return _ingest(run, path)


def _ingest(run: Run, path: Path) -> Batch | None:
    end = run.events_offset + READ_BYTES
    first = _NextPiece(path, run.events_offset, run.step, end)
    first()
    if first.read is None:
        _read_failed(run, path, first, None)
        return None
    pieces = [first]

    def next_piece() -> _NextPiece:
        last = pieces[-1]
        step = last.parsed.step if last.parsed.step is not None else last.step
        pieces.append(_NextPiece(path, last.read.offset, step, end))
        return pieces[-1]

    try:
        more = _grown_past(path, first.read.offset)  # else a live tail's few lines: one UPDATE, not two
        done = _commit(run, first.parsed, next_piece if more else None)
    except RETRYABLE_DB_ERRORS:
        raise
    except Exception:
        log.warning(
            "run %s: a batch of events could not be stored; storing its lines one at a time",
            run.id,
            exc_info=True,
        )
        read = _joined([piece.read for piece in pieces if piece.read is not None])
        return _commit_line_by_line(run, read)
    _read_failed(run, path, pieces[-1], done)
    return done


def _grown_past(path: Path, offset: int) -> bool:
    try:
        return os.stat(path).st_size > offset
    except OSError:
        return False


def _read_failed(run: Run, path: Path, piece: _NextPiece, done: Batch | None) -> None:
    """Say why ``piece`` could not be read, if it could not; raise what is not an OSError
    when nothing was stored before it (a bug: as the reader's own exceptions always were)."""
    if isinstance(piece.error, OSError):
        log.warning("run %s: could not read %s; trying again next round", run.id, path, exc_info=piece.error)
    elif piece.error is not None:
        if done is None:
            raise piece.error
        log.error("run %s: could not parse events past byte %s", run.id, piece.offset, exc_info=piece.error)


def _joined(reads: list[EventBatch]) -> EventBatch:
    """The pieces of one read as one read."""
    if len(reads) == 1:
        return reads[0]
    return EventBatch(
        [e for read in reads for e in read.events],
        reads[-1].offset,
        [bad for read in reads for bad in read.bad_lines],
        [span for read in reads for span in read.spans],
    )


class _NextPiece:
    """The next piece of a read of the events file, read and parsed when called (once).

    A read of a busy file is parsed and stored in pieces of ``PIECE_BYTES`` (in one
    transaction), and the next piece is parsed while the database stores the current one's
    points: ``write_points`` calls this once it has sent the points' COPY, and the
    database's work on them (the table, its four indexes, WAL: most of ingestion's time)
    outlasts the parse, which used to follow it with the database idle. In the same
    thread, not another: a parsing thread would hold the GIL against each of the write's
    round trips (the interpreter hands it over every 5 ms).

    Never raises (it runs inside the COPY, which an exception would abort): an ``OSError``
    reading the file, or anything else, ends the read and is kept in ``error``; what was
    read before it is stored as usual.
    """

    def __init__(self, path: Path, offset: int, step: int, end: int):
        self.path, self.offset, self.step, self.end = path, offset, step, end
        self.done = False
        self.read: EventBatch | None = None
        self.parsed: Batch | None = None
        self.error: BaseException | None = None

    def __call__(self) -> None:
        if self.done:
            return
        self.done = True
        if self.offset >= self.end:
            return
        try:
            read = read_events(self.path, self.offset, min(PIECE_BYTES, self.end - self.offset))
            if read.offset == self.offset and self.end - self.offset > PIECE_BYTES:
                # A line longer than a piece: read as one read of the rest would.
                read = read_events(self.path, self.offset, self.end - self.offset)
            if read.offset != self.offset:
                self.read, self.parsed = read, parse_events(read, self.step)
        except Exception as exc:
            self.error = exc


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Python's cycle collector off while a batch is read and stored, back on after.

    A read of a busy file is tens of thousands of events, each a few dicts and tuples that
    live until the batch is stored: the collector's full passes over them (and everything
    else the worker holds) were a third of ingestion's own time, and found nothing, since
    a batch holds no cycles. Reference counting still frees it all; the collector runs as
    usual between batches.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _progress(run: Run, batch: Batch) -> transitions.Progress:
    return transitions.Progress(
        offset=batch.offset,
        step=batch.step,
        last_loss=batch.last_loss,
        running=batch.running,
        sweep_id=run.sweep_id,
    )


def _commit(run: Run, batch: Batch, next_piece: Callable[[], _NextPiece] | None = None) -> Batch:
    """Store ``batch`` with the offset past it, in one transaction.

    With ``next_piece``: ``batch`` is a read's first piece, and each piece's points are
    stored while the next is read and parsed (``_NextPiece``), until there is none; they
    are all stored in this transaction, and ``batch`` returned holding them all.
    """
    with transaction.atomic():
        # The run's row is held from here on: the points need not lock it again.
        claim = _progress(run, batch) if next_piece is None else transitions.Progress(offset=batch.offset)
        if not transitions.record_progress(run.id, run.attempt, claim):
            transaction.set_rollback(True)
            batch.lost_ownership = True
            return batch
        written, logs_after, stored = WrittenPoints(0), None, 0
        piece: Batch | None = batch
        while piece is not None:
            ahead = next_piece() if next_piece is not None else None
            written = written.then(write_points(run.id, piece.points, run_locked=True, meanwhile=ahead))
            if piece.logs and logs_after is None:
                logs_after = live.last_log_id(run.id)
            transitions.record_logs(run.id, piece.logs)
            transitions.record_checkpoints(run.id, piece.checkpoints)
            transitions.record_samples(run.id, piece.samples)
            stored, piece.points = stored + len(piece.points), LatestPoints()  # let go of them now
            if piece is not batch:
                batch.absorb(piece)
            if ahead is not None:
                ahead()  # when the write had no COPY to overlap it with
            piece = ahead.parsed if ahead is not None else None
        if next_piece is not None:
            transitions.record_progress(run.id, run.attempt, _progress(run, batch))
        if batch.bad_lines:
            log.warning("run %s: skipped %d bad event line(s)", run.id, batch.skipped)
            step = batch.step if batch.step is not None else run.step
            written = written.then(_record_skipped_count(run.id, step))
        batch.live = live.rows_written(run.id, written, logs_after)
    batch.stored_points = stored
    run.events_offset = batch.offset
    if batch.step is not None:
        run.step = batch.step
    if batch.last_loss is not None:
        run.last_loss = batch.last_loss
    if batch.running and run.status == RunStatus.STARTING:
        run.status = RunStatus.RUNNING
    return batch


def _record_skipped_count(run_id: int, step: int) -> WrittenPoints:
    """The run's count of skipped lines so far, at ``step``: its warnings, counted after writing them.

    Counting the warnings (keyed by line) rather than adding to a total keeps a re-read
    of the same lines from counting them twice.
    """
    count = RunLog.objects.filter(run_id=run_id, level="warning", message__startswith=SKIP_WARNING).count()
    return write_points(run_id, [Point(SKIPPED_KEY, step, float(count), time.time())], run_locked=True)


def _commit_line_by_line(run: Run, read: EventBatch) -> Batch | None:
    """Store each line of ``read`` in its own transaction; a line that fails to store is skipped.

    Slow, but only taken when a whole batch could not be stored for a reason other than
    the database being unreachable: it finds the line at fault and keeps every other.
    """
    lines: list[tuple[int, EventBatch]] = [
        (start, EventBatch([e], end, [], [(start, end)]))
        for e, (start, end) in zip(read.events, read.spans, strict=True)
    ]
    lines += [(bad.offset, EventBatch([], bad.end, [bad])) for bad in read.bad_lines]
    lines.sort(key=lambda line: line[0])
    done: Batch | None = None
    for _, one in lines:
        if one.offset <= run.events_offset:
            continue
        try:
            result = _commit(run, parse_events(one, run.step))
        except RETRYABLE_DB_ERRORS:
            raise
        except Exception as exc:
            e = one.events[0] if one.events else None
            (start, end) = one.spans[0] if one.spans else (one.bad_lines[0].offset, one.offset)
            bad = BadLine(start, end, e.get("seq") if e else None, f"could not be stored ({_brief(exc)})", e)
            try:
                result = _commit(run, parse_events(EventBatch([], end, [bad]), run.step))
            except RETRYABLE_DB_ERRORS:
                raise
            except Exception:
                # Not even its warning can be stored: stop here and try again next round
                # (the trainer trains on; its events wait in the file).
                log.exception("run %s: could not store the event line at byte %s", run.id, start)
                return done
        if done is None:
            done = result
        else:
            done.absorb(result)
        if result.lost_ownership:
            return done
    if run.events_offset < read.offset:  # blank lines after the last one
        tail = _commit(run, Batch(offset=read.offset))
        if done is None:
            return tail
        done.absorb(tail)
    return done


def live_message(run: Run, batch: Batch | None = None) -> dict[str, Any]:
    """The message published on ``run:<id>`` after ``batch`` (or a change of status) is stored."""
    rows = batch.live if batch is not None else LiveRows([], None, None, [], None)
    return live.rows_message(run, rows)


def announce(run: Run, batch: Batch) -> None:
    """Publish an ingested batch; a Redis failure only delays live pages (they re-read the database)."""
    if batch.lost_ownership or not live.enabled():
        return
    _publish(run, live_message(run, batch))


def announce_status(run: Run) -> None:
    if live.enabled():
        _publish(run, live_message(run))


def _publish(run: Run, message: dict[str, Any]) -> None:
    try:
        live.publish(run.id, message)
    except Exception:
        log.warning("run %s: could not publish a live update", run.id, exc_info=True)


class EventsWatch:
    """Sleeps until the events file has grown, so a new line is read within ``WATCH_SECONDS``.

    A fixed sleep between reads of the file was half a second of every live point's
    latency. Polling the size is portable (inotify is Linux-only and misses writes on
    network file systems, where run directories often live) and costs a stat a tick.
    """

    def __init__(self, path: Path):
        self.path = path
        self.seen = -1  # the size at the last wake: a torn last line does not wake us again

    def wait(self, offset: int, timeout: float) -> None:
        """Return once the file holds bytes past ``offset`` that were not there at the last wake, or after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                size = os.stat(self.path).st_size
            except OSError:
                size = -1
            if size > offset and size != self.seen:
                self.seen = size
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(WATCH_SECONDS, left))


def _brief(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return text if len(text) <= 200 else text[:199] + "…"
