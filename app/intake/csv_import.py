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
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from app.errors import CallqueueError
from app.intake.rows import UpsertCounts, upsert_scores
from app.intake.scores import FIELDS, MAX_ROWS, RowError, observe, validate_rows
from app.queues.population import describe_error
from app.replica.reader import Replica

REQUIRED = ("user_id", "current_score")
INTEGER = re.compile(r"[+-]?[0-9]{1,25}")  # then range-checked like the API's integers
SHOWN_IN_DRY_RUN = 20


class UnreadableFile(CallqueueError):
    """The file cannot be imported at all (missing, not a CSV of scores): nothing was written."""

    code = "UnreadableFile"


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


def _fields(names: list[str], record: list[str]) -> dict[str, Any]:
    """A line as the API would receive it: integers as ints, blanks not given, anything else a
    string (which the row check rejects as not an integer)."""
    raw: dict[str, Any] = {}
    for name, value in zip(names, record, strict=True):
        value = value.strip()
        if value:
            raw[name] = int(value) if INTEGER.fullmatch(value) else value
    return raw


def _records(
    reader: Any, names: list[str]
) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(first physical line, fields or None, reason when the line cannot be used)."""
    previous = reader.line_num
    while True:
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error:
            yield previous + 1, None, "not a valid CSV line"
            previous = reader.line_num
            continue
        line, previous = previous + 1, reader.line_num
        if not record or (len(record) == 1 and not record[0].strip()):
            continue  # a blank line
        if len(record) != len(names):
            yield line, None, f"expected {len(names)} fields as in the header, found {len(record)}"
            continue
        yield line, _fields(names, record), None


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
    stops the import: the batches before it are in, the summary says where it stopped.
    """
    summary = ImportSummary(path, dry_run)
    try:
        handle = open(path, "rb", buffering=0)  # noqa: SIM115 (closed in the finally below)
        total = path.stat().st_size
    except OSError as exc:
        why = exc.strerror or type(exc).__name__
        raise UnreadableFile(f"cannot read the file ({why})") from None
    rejected_out: IO[str] | None = None
    rejected_writer: Any = None
    counting = _CountingReader(handle)
    text_stream = io.TextIOWrapper(
        io.BufferedReader(counting, 1 << 16), encoding="utf-8-sig", errors="replace", newline=""
    )
    try:
        reader = csv.reader(text_stream)
        names = _header(reader)
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                rejected_path_for(path).unlink()
        seen: set[int] = set()

        def reject(errors: list[RowError]) -> None:
            nonlocal rejected_out, rejected_writer
            summary.rejected += len(errors)
            if dry_run:
                room = SHOWN_IN_DRY_RUN - len(summary.shown)
                summary.shown.extend(errors[: max(room, 0)])
                return
            if rejected_out is None:
                summary.rejected_path = rejected_path_for(path)
                rejected_out = summary.rejected_path.open("w", newline="", encoding="utf-8")
                rejected_writer = csv.writer(rejected_out)
                rejected_writer.writerow(["line", "user_id", "error"])
            rejected_writer.writerows(
                [e.index, "" if e.user_id is None else e.user_id, e.error] for e in errors
            )

        batch: list[tuple[int, dict[str, Any]]] = []
        unusable: list[RowError] = []

        def flush() -> None:
            rows, errors = validate_rows(batch, seen)
            errors = sorted([*unusable, *errors], key=lambda e: e.index)
            counts = upsert_scores(engine, replica, rows, dry_run=dry_run)
            summary.counts.add(counts)
            if errors:
                reject(errors)
            if not dry_run:
                observe("csv", counts, len(errors))
            batch.clear()
            unusable.clear()
            if on_progress is not None:
                on_progress(counting.consumed, total)

        first_line = None
        try:
            for line, raw, reason in _records(reader, names):
                summary.rows += 1
                first_line = first_line or line
                if raw is None:
                    unusable.append(RowError(line, None, reason or "not a valid line"))
                else:
                    batch.append((line, raw))
                if len(batch) + len(unusable) >= batch_size:
                    flush()
                    first_line = None
            if batch or unusable:
                flush()
        except (CallqueueError, SQLAlchemyError) as exc:
            summary.stopped = (
                f"{describe_error(exc)} (lines from {first_line} on were not imported)"
            )
        if on_progress is not None:
            on_progress(total, total)
        return summary
    finally:
        text_stream.close()
        handle.close()
        if rejected_out is not None:
            rejected_out.close()
