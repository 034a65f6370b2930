"""The scores upsert's input rules (SPEC 7.1), shared by ``PUT /api/scores`` and the CSV import.

A row is judged on its own: a bad row is reported with its index and never fails the others.
Messages name the field and the rule, never the value given.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

from sqlalchemy import Engine

from app import metrics
from app.intake.rows import COMPONENTS, ERASED, ScoreRow, UpsertCounts, upsert_scores
from app.replica.reader import Replica
from app.rules.outcomes import MAX_SCORE, MIN_SCORE

MAX_ROWS = 10_000
FIELDS = ("user_id", "current_score", *COMPONENTS)
MAX_USER_ID = 2**63 - 1  # bigint, as the replica's users.id
INT4 = 2**31  # the component columns are int

UNKNOWN_FIELD = "unknown field (allowed: " + ", ".join(FIELDS) + ")"
BAD_USER_ID = f"user_id must be an integer from 1 to {MAX_USER_ID}"
BAD_CURRENT = f"current_score must be an integer from {MIN_SCORE} to {MAX_SCORE}"
DUPLICATE = "duplicate user_id: an earlier row gives the same user"


@dataclass(frozen=True, slots=True)
class RowError:
    index: int
    user_id: int | None
    error: str


@dataclass(slots=True)
class ScoresResult:
    counts: UpsertCounts = field(default_factory=UpsertCounts)
    errors: list[RowError] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.counts.created,
            "updated": self.counts.updated,
            "unchanged": self.counts.unchanged,
            "errors": [
                {"index": e.index, "user_id": e.user_id, "error": e.error} for e in self.errors
            ],
        }


def _is_int(value: Any) -> TypeGuard[int]:
    return type(value) is int  # not a bool, which is an int to isinstance


_FIELD_SET = frozenset(FIELDS)


def validate_row(index: int, raw: Any) -> ScoreRow | RowError:
    """One row of the body (a JSON object, or a CSV line already split into named fields, whose
    integers are ints and anything else is not). A component given as null is not given."""
    if not isinstance(raw, Mapping):
        return RowError(index, None, "a row must be an object")
    user_id = raw.get("user_id")
    valid_id = user_id if _is_int(user_id) and 1 <= user_id <= MAX_USER_ID else None
    if not raw.keys() <= _FIELD_SET:
        return RowError(index, valid_id, UNKNOWN_FIELD)
    if user_id is None:
        return RowError(index, None, "user_id is required")
    if valid_id is None:
        return RowError(index, None, BAD_USER_ID)
    current = raw.get("current_score")
    if current is None:
        return RowError(index, valid_id, "current_score is required")
    if not _is_int(current) or not MIN_SCORE <= current <= MAX_SCORE:
        return RowError(index, valid_id, BAD_CURRENT)
    if len(raw) == 2:  # the usual row: no components
        return ScoreRow(valid_id, current)
    components: list[int | None] = []
    for name in COMPONENTS:
        value = raw.get(name)
        if value is not None and (not _is_int(value) or not -INT4 <= value < INT4):
            message = f"{name} must be an integer from {-INT4} to {INT4 - 1}"
            return RowError(index, valid_id, message)
        components.append(value)
    return ScoreRow(valid_id, current, *components)


def validate_rows(
    raws: Iterable[tuple[int, Any]], seen: set[int] | None = None
) -> tuple[list[ScoreRow], list[RowError]]:
    """Rows and errors of a batch, each raw row with its index. A user id given by an earlier
    row (of this batch, or of ``seen``, which the caller keeps across the batches of a file) is
    an error: which of two values was meant is not the service's guess to make."""
    seen = set() if seen is None else seen
    rows: list[ScoreRow] = []
    errors: list[RowError] = []
    for index, raw in raws:
        checked = validate_row(index, raw)
        if isinstance(checked, RowError):
            errors.append(checked)
        elif checked.user_id in seen:
            errors.append(RowError(index, checked.user_id, DUPLICATE))
        else:
            seen.add(checked.user_id)
            rows.append(checked)
    return rows, errors


def apply_scores(engine: Engine, replica: Replica, raws: Sequence[Any]) -> ScoresResult:
    """``PUT /api/scores``: validate every row, then upsert the good ones in one transaction; a
    row of a user whose data was erased is an error (``Erased``)."""
    indexed = list(enumerate(raws))
    rows, errors = validate_rows(indexed)
    counts = upsert_scores(engine, replica, rows)
    if counts.erased:
        # The row that carried each refused user (the first with that id: a repeat is already
        # an error of its own).
        refused = set(counts.erased)
        for index, raw in indexed:
            user_id = raw.get("user_id") if isinstance(raw, dict) else None
            if user_id in refused:
                refused.discard(user_id)
                errors.append(RowError(index, user_id, ERASED))
        errors.sort(key=lambda e: e.index)
    observe("api", counts, len(errors))
    return ScoresResult(counts, errors)


def observe(source: str, counts: UpsertCounts, rejected: int) -> None:
    for result, n in (
        ("created", counts.created),
        ("updated", counts.updated),
        ("unchanged", counts.unchanged),
        ("rejected", rejected),
    ):
        if n:
            metrics.INTAKE_ROWS.labels(source, result).inc(n)
