"""``callqueue scores import FILE.csv`` (SPEC 7.1): the scores API's semantics, for a file.

The file is streamed: read, checked and written in batches of ``MAX_ROWS`` lines (one API
request's worth, each its own transaction), so a file of millions of lines never sits in memory;
what is kept across batches is the set of user ids already given, so a user repeated anywhere in
the file is rejected where it repeats (about 70 bytes per distinct user). Lines are numbered as an
editor numbers them: physical lines, the header being line 1, a blank line counted and skipped.

Rejected lines go to ``<name>.rejected.csv`` beside the input (``line,user_id,error``); a stale
one from an earlier import is removed first. A dry run checks everything, reads the store to
count what would be created, updated or left unchanged, and writes nothing at all, not even the
rejected-lines file (the first rejections are listed in the summary instead).

Encoding: UTF-8, with or without a byte-order mark; Windows (CRLF) or Unix line endings. Bytes
that are not UTF-8 make their line's fields non-integers, so the line is rejected, not the file.
"""

from __future__ import annotations

import contextlib
import csv
import io
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.errors import CallqueueError, UnreadableFile
from app.intake.rows import (
    COMPONENTS,
    ERASED,
    Prepared,
    ScoreRow,
    UpsertCounts,
    count_batch,
    prepare_batch,
    write_prepared,
)
from app.intake.scores import (
    DUPLICATE,
    FIELDS,
    INT4,
    MAX_ROWS,
    MAX_USER_ID,
    RowError,
    observe,
    validate_row,
)
from app.logs import describe_error
from app.replica.reader import Replica
from app.rules.outcomes import MAX_SCORE

REQUIRED = ("user_id", "current_score")
MAX_DIGITS = 25  # then range-checked like the API's integers
SHOWN_IN_DRY_RUN = 20


@dataclass(slots=True)
class ImportSummary:
    path: Path
    dry_run: bool
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    rows: int = 0  # data lines read (blank lines aside)
    rejected: int = 0
    rejected_path: Path | None = None
    # The first rejections of a dry run, which writes no file: (line, user id, reason).
    shown: list[RowError] = field(default_factory=list)
    # Why the import stopped before the end of the file, if it did.
    stopped: str | None = None

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.rejected == 0

    def line(self) -> str:
        c = self.counts
        verb = "would be" if self.dry_run else "were"
        text = (
            f"{self.path.name}: {self.rows:,} rows: created {c.created:,}, updated {c.updated:,},"
            f" unchanged {c.unchanged:,}, rejected {self.rejected:,}"
        )
        if self.dry_run:
            text += f" (dry run: nothing {verb} written)"
        elif self.rejected_path is not None:
            text += f" (lines and reasons in {self.rejected_path})"
        if self.stopped:
            text += f"; stopped early: {self.stopped}"
        return text


def rejected_path_for(path: Path) -> Path:
    return path.with_name(f"{path.stem}.rejected.csv")


class _CountingReader(io.RawIOBase):
    """The file's bytes, counted as they are read: the progress bar's position."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self.raw.readinto(buffer)
        self.consumed += n or 0
        return n or 0


def _header(reader: Any) -> list[str]:
    try:
        header = next(reader)
    except StopIteration:
        raise UnreadableFile(
            "the file is empty: its first line must be a header, user_id,current_score[,...]"
        ) from None
    except csv.Error:
        raise UnreadableFile("the header line is not valid CSV") from None
    names = [name.strip().lower() for name in header]
    for position, name in enumerate(names, start=1):
        if name not in FIELDS:
            raise UnreadableFile(
                f"column {position} of the header is not one of {', '.join(FIELDS)}"
            )
    if len(set(names)) != len(names):
        raise UnreadableFile("the header names a column twice")
    missing = [name for name in REQUIRED if name not in names]
    if missing:
        raise UnreadableFile(f"the header has no {' and no '.join(missing)} column")
    return names


def _integer(value: str) -> int | str | None:
    """A field as the API would receive it: an int when it is one (ASCII digits, a sign,
    spaces around), None when blank (not given), else the string, which the row check rejects
    as not an integer."""
    value = value.strip()
    digits = value[1:] if value[:1] in ("+", "-") else value
    if digits.isascii() and digits.isdigit() and len(digits) <= MAX_DIGITS:
        return int(value)
    return value or None


class _Columns:
    """Where each field sits in a line, and the check of a line."""

    def __init__(self, names: list[str]) -> None:
        self.names = names
        self.user_id = names.index("user_id")
        self.current = names.index("current_score")
        self.components = [names.index(c) if c in names else None for c in COMPONENTS]

    def row(self, line: int, record: list[str]) -> ScoreRow | RowError:
        """The line as a row, or why it is rejected. Lines of plain digits (nearly all of a
        scoring pipeline's export) are read here directly; any other line goes through the
        API's row check, which gives the same row for a plain line and the reason otherwise."""
        u, c = record[self.user_id], record[self.current]
        if u.isdigit() and u.isascii() and c.isdigit() and c.isascii() and len(u) <= MAX_DIGITS:
            user_id, current = int(u), int(c)
            if 1 <= user_id <= MAX_USER_ID and current <= MAX_SCORE:
                values: list[int | None] = []
                for position in self.components:
                    v = "" if position is None else record[position]
                    if not v:
                        values.append(None)
                    elif v.isdigit() and v.isascii() and len(v) < 10 and int(v) < INT4:
                        values.append(int(v))
                    else:
                        break
                else:
                    return ScoreRow(user_id, current, *values)
        fields = {}
        for name, value in zip(self.names, record, strict=True):
            parsed = _integer(value)
            if parsed is not None:
                fields[name] = parsed
        return validate_row(line, fields)


def _lines(reader: Any, columns: _Columns) -> Iterator[tuple[int, ScoreRow | RowError]]:
    """Each line that is not blank: its first physical line, and its row or why not."""
    expected = len(columns.names)
    previous = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield previous + 1, RowError(previous + 1, None, "not a valid CSV line")
            previous = reader.line_num
            continue
        line, previous = previous + 1, reader.line_num
        if len(record) == expected:
            yield line, columns.row(line, record)
        elif record and (len(record) > 1 or record[0].strip()):
            reason = f"expected {expected} fields as in the header, found {len(record)}"
            yield line, RowError(line, None, reason)


class _Rejections:
    """Rejected lines: to ``<name>.rejected.csv``, opened at the first one; in a dry run, the
    first ``SHOWN_IN_DRY_RUN`` kept for the summary instead."""

    def __init__(self, summary: ImportSummary) -> None:
        self.summary = summary
        self._out: IO[str] | None = None
        self._writer: Any = None

    def add(self, errors: list[RowError]) -> None:
        summary = self.summary
        summary.rejected += len(errors)
        if summary.dry_run:
            room = max(SHOWN_IN_DRY_RUN - len(summary.shown), 0)
            summary.shown.extend(errors[:room])
            return
        if self._out is None:
            summary.rejected_path = rejected_path_for(summary.path)
            self._out = summary.rejected_path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._out)
            self._writer.writerow(["line", "user_id", "error"])
        self._writer.writerows(
            [e.index, "" if e.user_id is None else e.user_id, e.error] for e in errors
        )

    def close(self) -> None:
        if self._out is not None:
            self._out.close()


@dataclass(slots=True)
class _Batch:
    first_line: int
    rows: list[ScoreRow]
    errors: list[RowError]
    consumed: int  # bytes of the file read when the batch was complete
    # Each row's line, by user id (a refused row is reported with its line).
    lines: dict[int, int] = field(default_factory=dict)


def _batches(
    reader: Any, names: list[str], batch_size: int, counting: _CountingReader
) -> Iterator[_Batch]:
    """The file's lines, checked, ``batch_size`` at a time; a user id already given earlier in
    the file is an error where it repeats (which of two values was meant is not the service's
    guess to make)."""
    seen: set[int] = set()
    columns = _Columns(names)
    batch = _Batch(0, [], [], 0)
    for line, checked in _lines(reader, columns):
        if not batch.rows and not batch.errors:
            batch.first_line = line
        if isinstance(checked, RowError):
            batch.errors.append(checked)
        elif checked.user_id in seen:
            batch.errors.append(RowError(line, checked.user_id, DUPLICATE))
        else:
            seen.add(checked.user_id)
            batch.rows.append(checked)
            batch.lines[checked.user_id] = line
        if len(batch.rows) + len(batch.errors) >= batch_size:
            batch.consumed = counting.consumed
            yield batch
            batch = _Batch(0, [], [], 0)
    if batch.rows or batch.errors:
        batch.consumed = counting.consumed
        yield batch


class _Skipped(Exception):
    """A batch after a failed one: not written, so the file goes in without a hole."""


class _Writer:
    """Batches written in file order while the next ones are read and classified.

    Three things happen at once: this thread reads and checks the file, a worker classifies the
    next batch's new users on the replica, another writes the batch before it to the store (the
    drivers release the GIL while the databases work). At most ``IN_FLIGHT`` batches are read
    ahead, so memory stays a few batches whatever the file's size. Each worker takes batches in
    order; once a batch fails, the ones after it are skipped, never written around the hole.
    """

    IN_FLIGHT = 2

    def __init__(self, engine: Engine, replica: Replica) -> None:
        self.engine = engine
        self.replica = replica
        self._classify = ThreadPoolExecutor(1, thread_name_prefix="import-classify")
        self._write = ThreadPoolExecutor(1, thread_name_prefix="import-write")
        self._failed = threading.Event()
        self.in_flight: deque[tuple[_Batch, Future[UpsertCounts]]] = deque()

    def submit(self, batch: _Batch) -> None:
        prepared = self._classify.submit(prepare_batch, self.engine, self.replica, batch.rows)
        self.in_flight.append((batch, self._write.submit(self._write_after, prepared)))

    def _write_after(self, prepared: Future[Prepared]) -> UpsertCounts:
        if self._failed.is_set():
            raise _Skipped
        try:
            return write_prepared(self.engine, prepared.result())
        except BaseException:
            self._failed.set()
            raise

    def close(self) -> None:
        self._failed.set()  # anything still queued is skipped
        self._classify.shutdown(wait=True, cancel_futures=True)
        self._write.shutdown(wait=True, cancel_futures=True)


def import_scores(
    engine: Engine,
    replica: Replica,
    path: Path,
    *,
    dry_run: bool = False,
    batch_size: int = MAX_ROWS,
    on_progress: Callable[[int, int], None] | None = None,
) -> ImportSummary:
    """Import ``path``; ``on_progress(bytes read, total bytes)`` after each batch.

    Raises UnreadableFile before writing anything when the file cannot be opened, is empty, or
    its header is not one of scores. A failure mid-way (the replica or the store unreachable)
    stops the import: the batches before it are in, none after it, and the summary says where
    it stopped.
    """
    summary = ImportSummary(path, dry_run)
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed in the finally below)
        total = path.stat().st_size
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UnreadableFile(f"cannot read the file ({why})") from None
    counting = _CountingReader(handle)
    text_stream = io.TextIOWrapper(
        io.BufferedReader(counting, 1 << 16), encoding="utf-8-sig", errors="replace", newline=""
    )
    rejections = _Rejections(summary)
    writer = _Writer(engine, replica)

    def settle(batch: _Batch, counts: UpsertCounts) -> None:
        summary.rows += len(batch.rows) + len(batch.errors)
        summary.counts.add(counts)
        errors = batch.errors + [RowError(batch.lines[uid], uid, ERASED) for uid in counts.erased]
        if errors:
            rejections.add(sorted(errors, key=lambda e: e.index))
        if not dry_run:
            observe("csv", counts, len(errors))
        if on_progress is not None:
            on_progress(batch.consumed, total)

    current: _Batch | None = None  # the batch whose result is being taken
    try:
        reader = csv.reader(text_stream)
        names = _header(reader)
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                rejected_path_for(path).unlink()
        for batch in _batches(reader, names, batch_size, counting):
            if dry_run:
                current = batch
                settle(batch, count_batch(engine, batch.rows))
                continue
            writer.submit(batch)
            while len(writer.in_flight) > writer.IN_FLIGHT:
                current, future = writer.in_flight.popleft()
                settle(current, future.result())
        while writer.in_flight:
            current, future = writer.in_flight.popleft()
            settle(current, future.result())
    except UnreadableFile:
        raise
    except (CallqueueError, SQLAlchemyError) as exc:
        where = f"lines from {current.first_line} on" if current else "no line"
        summary.stopped = f"{describe_error(exc)} ({where} were not imported)"
    finally:
        writer.close()
        text_stream.close()
        handle.close()
        rejections.close()
    if on_progress is not None:
        on_progress(total, total)
    return summary
