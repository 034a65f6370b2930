"""The suppression (do-not-call) list (SPEC 7.3): numbers never to be called, whoever has them.

A number is normalised to E.164 with ``phonenumbers`` (default region GB) and accepted when it is
*possible* for its region by length; membership of an allocated range is not required, so the
fiction range 07700 900000-900999 works. Only HMAC-SHA256(SUPPRESSION_KEY, E.164) is stored, as
64 hex digits: with the key held apart from the database, a stolen dump does not give the
numbers back (an unkeyed hash of a 10-digit number would, by trying them all).

The key: SUPPRESSION_KEY, required in production. In development and tests without it, a key is
generated once into DATA_DIR (mode 0600), as the development cron secret is, and ``callqueue
serve`` hands it to its workers. The database keeps a fingerprint of the key (an HMAC of a fixed
label), recorded by the first process that needs it (``cq_key_matches``). A process whose key
gives another fingerprint would hash every number differently and call suppressed people, so it
fails closed (SPEC 8.1): every hand-out checks the fingerprint in its own transaction and hands
nobody out on a mismatch (next-user answers 503 SuppressionKeyMismatch), every write of hashes
checks it first, and /readyz reports it.

The claim path hashes the number about to be handed out with ``SuppressionList.phone_key`` and
checks it against the list inside ``cq_hand_out``, under the number's lock; the hash is kept on
the ledger row, and a ``do_not_contact`` outcome adds exactly that hash with ``cq_suppress``
(migrations/sql/).
"""

from __future__ import annotations

import csv
import hashlib
import hmac
import io
import logging
import os
import secrets
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import phonenumbers
from phonenumbers import NumberParseException, PhoneNumberFormat, ValidationResult
from sqlalchemy import Connection, Engine, text

from app import metrics
from app.config import Settings
from app.errors import ConfigError, InvalidInput, SuppressionKeyMismatch

log = logging.getLogger(__name__)

DEFAULT_REGION = "GB"
MAX_PHONE_LENGTH = 64
KEY_FILE = "suppression_key"
FINGERPRINT_LABEL = b"callqueue suppression key fingerprint v1"
IMPORT_BATCH = 5000
SOURCES = ("api", "import", "do_not_contact", "demo")


KEY_MISMATCH = (
    "SUPPRESSION_KEY is not the key this database's do-not-call list was built with: its hashes"
    " would never match, so nobody is handed out and no number is added. Restore the original"
    " key (README, 'Suppression (do-not-call) list', says how to move to a new one)"
)

# /readyz's "suppression_key": no fingerprint stored yet, the process's key matches, or not.
KEY_UNSET, KEY_OK, KEY_MISMATCHED = "unset", "ok", "mismatch"


def normalise(phone: str | None) -> str | None:
    """The number in E.164, or None when it is not a possible number for its region."""
    if not phone or not phone.strip() or len(phone) > MAX_PHONE_LENGTH:
        return None
    try:
        number = phonenumbers.parse(phone, DEFAULT_REGION)
    except NumberParseException:
        return None
    if phonenumbers.is_possible_number_with_reason(number) != ValidationResult.IS_POSSIBLE:
        return None
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def resolve_key(settings: Settings) -> bytes:
    """SUPPRESSION_KEY; outside production without it, the key generated into DATA_DIR."""
    if settings.suppression_key is not None:
        return settings.suppression_key.get_secret_value().encode()
    if settings.app_env == "production":
        raise ConfigError("SUPPRESSION_KEY is not set: production needs the suppression list's key")
    return _dev_key(settings.data_dir.expanduser().resolve())


def _dev_key(data_dir: Path) -> bytes:
    """Created once and never replaced: two processes starting together both end up with the
    file's key (the first link wins, the other reads it), since a key that changed would orphan
    every hash already stored."""
    path = data_dir / KEY_FILE
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{KEY_FILE}.{os.getpid()}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32) + "\n")
        try:
            os.link(tmp, path)
            log.info("suppression.key_generated", extra={"path": str(path)})
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    key = path.read_text().strip()
    if not key:
        raise ConfigError(f"the development suppression key in {path} is empty")
    return key.encode()


@dataclass(frozen=True, slots=True)
class Added:
    added: int
    already_present: int


@dataclass(frozen=True, slots=True)
class Removed:
    removed: int
    not_present: int


@dataclass(slots=True)
class ImportResult:
    added: int = 0
    already_present: int = 0
    unparseable: int = 0
    # Physical line numbers (the header, if any, is line 1) of the numbers that did not parse.
    unparseable_lines: list[int] = field(default_factory=list)


_KEY_MATCHES = text("SELECT cq_key_matches(:f)")
_STORED_FINGERPRINT = text("SELECT fingerprint FROM suppression_key_check WHERE id = 1")


class SuppressionList:
    """The list as this process sees it: its key, and the operations on the table."""

    def __init__(self, key: bytes) -> None:
        if not key:
            raise ConfigError("SUPPRESSION_KEY is empty")
        self._key = key
        self.fingerprint = hmac.new(key, FINGERPRINT_LABEL, hashlib.sha256).hexdigest()
        self._cached_key = lru_cache(maxsize=65_536)(self._key_of)

    @classmethod
    def from_settings(cls, settings: Settings) -> SuppressionList:
        return cls(resolve_key(settings))

    def phone_key(self, phone: str | None) -> str | None:
        """HMAC-SHA256 of the number's E.164 form (64 hex digits), or None when unparseable.
        Every hand-out asks this of the number it is about to give out; parsing costs more than
        the lookup, so the answers for the numbers seen last are kept."""
        return self._cached_key(phone)

    def _key_of(self, phone: str | None) -> str | None:
        e164 = normalise(phone)
        if e164 is None:
            return None
        return hmac.new(self._key, e164.encode(), hashlib.sha256).hexdigest()

    def check_key(self, conn: Connection) -> None:
        """Before writing hashes, in the writing transaction: record the key's fingerprint when
        none is stored yet; refuse (SuppressionKeyMismatch) when another key's is."""
        if not conn.execute(_KEY_MATCHES, {"f": self.fingerprint}).scalar_one():
            log.error("suppression.key_mismatch")
            raise SuppressionKeyMismatch(KEY_MISMATCH)

    def key_state(self, conn: Connection) -> str:
        """KEY_UNSET, KEY_OK or KEY_MISMATCHED, read without recording anything."""
        stored = conn.execute(_STORED_FINGERPRINT).scalar()
        if stored is None:
            return KEY_UNSET
        return KEY_OK if hmac.compare_digest(stored, self.fingerprint) else KEY_MISMATCHED

    # -- changes ------------------------------------------------------------------------------

    def keys_or_422(self, phones: Sequence[str]) -> list[str]:
        """Every number's hash, or InvalidInput naming (by position) each that does not parse."""
        keys, bad = [], []
        for index, phone in enumerate(phones):
            key = self.phone_key(phone)
            if key is None:
                bad.append(index)
            else:
                keys.append(key)
        if bad:
            error = InvalidInput(
                f"{len(bad)} of the numbers are not possible phone numbers; nothing was changed",
                ["body", "phones", bad[0]],
            )
            error.fields = [
                {"loc": ["body", "phones", i], "msg": "not a possible phone number"} for i in bad
            ]
            raise error
        return keys

    def add(
        self, conn: Connection, phones: Sequence[str], source: str, agent_id: int | None
    ) -> Added:
        keys = self.keys_or_422(phones)
        self.check_key(conn)
        distinct = list(dict.fromkeys(keys))
        added = add_numbers(conn, distinct, source, agent_id)
        return Added(added, len(distinct) - added)

    def remove(
        self, conn: Connection, phones: Sequence[str], source: str, agent_id: int | None
    ) -> Removed:
        keys = self.keys_or_422(phones)
        self.check_key(conn)
        distinct = list(dict.fromkeys(keys))
        removed = remove_numbers(conn, distinct, source, agent_id)
        return Removed(removed, len(distinct) - removed)

    def import_file(
        self,
        engine: Engine,
        path: Path,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ImportResult:
        """One number a line, or a CSV whose header has a ``phone`` column. Committed in batches,
        so a large file is not one long transaction; running it again adds nothing twice.
        ``progress`` is told how many bytes of the file have been read."""
        result = ImportResult()
        with path.open("rb") as raw:
            with engine.begin() as conn:
                self.check_key(conn)
            pending: dict[str, None] = {}
            for line_number, phone in _numbers(raw, progress):
                key = self.phone_key(phone)
                if key is None:
                    result.unparseable += 1
                    result.unparseable_lines.append(line_number)
                    continue
                if key in pending:
                    result.already_present += 1
                    continue
                pending[key] = None
                if len(pending) >= IMPORT_BATCH:
                    self._import_batch(engine, pending, result)
            self._import_batch(engine, pending, result)
        log.info(
            "suppression.imported",
            extra={
                "added": result.added,
                "already_present": result.already_present,
                "unparseable": result.unparseable,
            },
        )
        return result

    def _import_batch(self, engine: Engine, pending: dict[str, None], result: ImportResult) -> None:
        if not pending:
            return
        with engine.begin() as conn:
            self.check_key(conn)
            added = add_numbers(conn, list(pending), "import", None)
        result.added += added
        result.already_present += len(pending) - added
        pending.clear()


def _numbers(
    raw: io.BufferedReader, progress: Callable[[int], None] | None
) -> Iterator[tuple[int, str]]:
    """(physical line number, number) for each number of the file. A first line naming a
    ``phone`` column makes it a CSV; otherwise every non-blank line is one number. Bytes that
    are not UTF-8 make their number unparseable, not the file unreadable."""
    text_stream = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
    first = text_stream.readline()
    header = next(csv.reader([first]), [])
    columns = [c.strip().lower() for c in header]
    if "phone" in columns:
        column = columns.index("phone")
        reader = csv.reader(text_stream)
        for row in reader:
            if progress:
                progress(raw.tell())
            if not row or not any(cell.strip() for cell in row):
                continue
            yield reader.line_num + 1, row[column] if column < len(row) else ""
        return
    line_number = 1
    if first.strip():
        yield line_number, first.strip()
    for line in text_stream:
        line_number += 1
        if progress and line_number % 1000 == 0:
            progress(raw.tell())
        if line.strip():
            yield line_number, line.strip()
    if progress:
        progress(raw.tell())


def add_numbers(conn: Connection, hashes: Iterable[str], source: str, agent_id: int | None) -> int:
    """Add hashes (from ``phone_key``) to the list, each new one audited; returns how many were
    new. (A do_not_contact outcome adds its number inside cq_complete.)"""
    if source not in SOURCES:
        raise ValueError("unknown suppression source")
    values = list(hashes)
    if not values:
        return 0
    # cq_suppress (the claim functions' migration): the same statement cq_complete runs for a
    # do_not_contact outcome.
    added = conn.execute(
        text("SELECT cq_suppress(CAST(:hashes AS text[]), :source, :agent)"),
        {"hashes": values, "source": source, "agent": agent_id},
    ).scalar_one()
    if added:
        metrics.SUPPRESSION_CHANGES.labels("add", source).inc(added)
    return int(added)


def remove_numbers(
    conn: Connection, hashes: Iterable[str], source: str, agent_id: int | None
) -> int:
    values = list(hashes)
    if not values:
        return 0
    removed = conn.execute(
        text(
            "WITH gone AS (DELETE FROM suppressed_numbers"
            " WHERE phone_hash = ANY(CAST(:hashes AS text[])) RETURNING phone_hash)"
            " INSERT INTO suppression_changes (action, phone_hash, source, agent_id)"
            " SELECT 'remove', phone_hash, :source, :agent FROM gone"
        ),
        {"hashes": values, "source": source, "agent": agent_id},
    ).rowcount
    if removed:
        metrics.SUPPRESSION_CHANGES.labels("remove", source).inc(removed)
    return int(removed)


def count(conn: Connection) -> int:
    return int(conn.execute(text("SELECT count(*) FROM suppressed_numbers")).scalar_one())
