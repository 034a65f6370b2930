"""Creating and updating score rows from upstream (SPEC 7.1): the scores API, the CSV import and
discovery all write through here.

**Scores as given** (SPEC 8.1). The scorer owns the score columns (``current_score``,
``base_score``, ``outcome_penalty_score``, ``time_penalty_score``) and sets them to the values it
sends, whatever outcomes came before; a column not given is left as it is. An outcome's effect on
scheduling lives in ``next_call_after`` (and the counters, ``is_active``, the queue type), which
this module never writes for an existing row. So the same body twice gives ``unchanged`` for every
row the second time. The service's own outcomes change ``current_score`` only by relative,
clamped updates in one statement (``cq_complete``), so a concurrent upsert and outcome never lose
each other's write: each is applied to the row as the other left it, under the row lock.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from sqlalchemy import Connection, Engine, text

from app.db import pg_array, pg_int_array
from app.replica.bulk import classify_in_sql
from app.replica.reader import Replica
from app.statements import driver_error

COMPONENTS = ("base_score", "outcome_penalty_score", "time_penalty_score")
SCORE_COLUMNS = ("current_score", *COMPONENTS)


@dataclass(slots=True)
class ScoreRow:
    """One validated upstream row; a component left as None is not written."""

    user_id: int
    current_score: int
    base_score: int | None = None
    outcome_penalty_score: int | None = None
    time_penalty_score: int | None = None


@dataclass(slots=True)
class UpsertCounts:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    # Users refused because their data was erased (SPEC 8.3: error ``Erased``).
    erased: list[int] = field(default_factory=list)

    def add(self, other: UpsertCounts) -> None:
        self.created += other.created
        self.updated += other.updated
        self.unchanged += other.unchanged
        self.erased.extend(other.erased)


ERASED = "Erased"
_PERSON_LOCKS = text("SELECT cq_person_locks(CAST(:ids AS bigint[]), false)")
_ERASED = text("SELECT user_id FROM erased_users WHERE user_id = ANY(CAST(:ids AS bigint[]))")


def refuse_erased(conn: Connection, user_ids: Sequence[int]) -> set[int]:
    """Of ``user_ids``, those whose data was erased: never written again. Their buckets' person
    locks are taken shared first and held to the commit (cq_person_locks), so an erasure
    committing meanwhile is either seen here or waits for this transaction (and then deletes
    what it wrote)."""
    if not user_ids:
        return set()
    ids = pg_int_array(user_ids)
    conn.execute(_PERSON_LOCKS, {"ids": ids})
    return set(conn.execute(_ERASED, {"ids": ids}).scalars())


def erased_among(conn: Connection, user_ids: Sequence[int]) -> set[int]:
    """``refuse_erased`` without the locks: for a dry run, which writes nothing."""
    if not user_ids:
        return set()
    return set(conn.execute(_ERASED, {"ids": pg_int_array(user_ids)}).scalars())


@dataclass(frozen=True, slots=True)
class Stored:
    """A score row's score columns."""

    current_score: int
    base_score: int
    outcome_penalty_score: int
    time_penalty_score: int

    def scores(self) -> tuple[int, int, int, int]:
        return (
            self.current_score,
            self.base_score,
            self.outcome_penalty_score,
            self.time_penalty_score,
        )


def next_scores(given: ScoreRow, stored: Stored) -> tuple[int, int, int, int]:
    """The score columns after the scorer's write: as given, a component not given as it is."""
    return (
        given.current_score,
        stored.base_score if given.base_score is None else given.base_score,
        stored.outcome_penalty_score
        if given.outcome_penalty_score is None
        else given.outcome_penalty_score,
        stored.time_penalty_score if given.time_penalty_score is None else given.time_penalty_score,
    )


_STORED_COLUMNS = "user_id, " + ", ".join(SCORE_COLUMNS)
_BATCH = "user_id = ANY(CAST(:ids AS bigint[]))"
_READ = text(f"SELECT {_STORED_COLUMNS} FROM user_call_scores WHERE {_BATCH}")
# Locked in user id order, as every bulk writer of score rows locks them (transitions.py).
_LOCK = text(
    f"SELECT {_STORED_COLUMNS} FROM user_call_scores WHERE {_BATCH} ORDER BY user_id FOR UPDATE"
)
_EXISTING = text(f"SELECT user_id FROM user_call_scores WHERE {_BATCH}")

# Bulk statements take their columns as array literals (app.db.pg_array) and return created ids
# as one array: per row, SQLAlchemy's parameter and result handling would cost more than the
# database's work.
_UPDATE = text(
    """
    UPDATE user_call_scores s
       SET current_score = v.current_score,
           base_score = v.base_score,
           outcome_penalty_score = v.outcome_penalty_score,
           time_penalty_score = v.time_penalty_score,
           updated_at = now()
      FROM unnest(CAST(:user_ids AS bigint[]), CAST(:current AS int[]), CAST(:base AS int[]),
                  CAST(:outcome AS int[]), CAST(:time AS int[]))
           AS v(user_id, current_score, base_score, outcome_penalty_score, time_penalty_score)
     WHERE s.user_id = v.user_id
    """
)

# New rows: scores as given (0 where not), the queue type the replica gave, everything else the
# table's defaults (active, callable, no attempts). A row another writer created meanwhile is
# left alone here; the caller updates it as an existing row.
_INSERT = text(
    """
    WITH created AS (
        INSERT INTO user_call_scores (user_id, current_score, base_score, outcome_penalty_score,
                                      time_penalty_score, current_queue_type, last_queue_check)
        SELECT v.user_id, v.current_score, v.base_score, v.outcome_penalty_score,
               v.time_penalty_score, v.queue_type, now()
          FROM unnest(CAST(:user_ids AS bigint[]), CAST(:current AS int[]),
                      CAST(:base AS int[]), CAST(:outcome AS int[]), CAST(:time AS int[]),
                      CAST(:types AS text[]))
               AS v(user_id, current_score, base_score, outcome_penalty_score,
                    time_penalty_score, queue_type)
         ORDER BY v.user_id
        ON CONFLICT (user_id) DO NOTHING
        RETURNING user_id
    )
    SELECT coalesce(array_agg(user_id), '{}') FROM created
    """
)


def insert_rows(
    conn: Connection,
    user_ids: Sequence[int],
    queue_types: Sequence[str | None],
    scores: Sequence[ScoreRow] | None = None,
) -> set[int]:
    """Create the rows that do not exist yet (score 0 unless ``scores``, one per user id, says
    otherwise); returns the user ids created."""
    if not user_ids:
        return set()
    zeros = pg_int_array([0] * len(user_ids))
    params = {
        "user_ids": pg_int_array(user_ids),
        "types": pg_array(queue_types),
        "current": zeros,
        "base": zeros,
        "outcome": zeros,
        "time": zeros,
    }
    if scores is not None:
        params["current"] = pg_int_array(r.current_score for r in scores)
        params["base"] = pg_int_array(r.base_score or 0 for r in scores)
        params["outcome"] = pg_int_array(r.outcome_penalty_score or 0 for r in scores)
        params["time"] = pg_int_array(r.time_penalty_score or 0 for r in scores)
    created: list[int] = conn.execute(_INSERT, params).scalar_one()
    return set(created)


_COPY = (
    "COPY user_call_scores (user_id, current_score, base_score, outcome_penalty_score,"
    " time_penalty_score, current_queue_type, last_queue_check) FROM STDIN"
)


def create_rows(
    conn: Connection,
    user_ids: Sequence[int],
    queue_types: Sequence[str | None],
    scores: Sequence[ScoreRow] | None = None,
) -> set[int]:
    """Create rows for users that had none a moment ago; returns the user ids created.

    The common case, a batch of users nobody else is creating, goes in with ``COPY``, inside a
    savepoint: row by row, ``INSERT ... ON CONFLICT`` costs the store about twice the work of a
    ``COPY`` of the same rows (measured at 1,000,000 rows, ``bench/intake.py``). If one of them
    was created meanwhile by another writer, the ``COPY`` fails on the unique index, its
    savepoint is rolled back, and ``insert_rows`` creates those still missing instead.
    """
    if not user_ids:
        return set()
    now = conn.execute(text("SELECT now()")).scalar_one().isoformat()
    if scores is None:
        lines = (
            f"{int(uid)}\t0\t0\t0\t0\t{queue_type or NULL}\t{now}\n"
            for uid, queue_type in zip(user_ids, queue_types, strict=True)
        )
    else:
        lines = (
            f"{int(r.user_id)}\t{int(r.current_score)}\t{int(r.base_score or 0)}"
            f"\t{int(r.outcome_penalty_score or 0)}\t{int(r.time_penalty_score or 0)}"
            f"\t{queue_type or NULL}\t{now}\n"
            for r, queue_type in zip(scores, queue_types, strict=True)
        )
    payload = "".join(lines).encode()
    savepoint = conn.begin_nested()
    cursor = None
    try:
        raw = conn.connection.driver_connection
        with raw.cursor() as cursor, cursor.copy(_COPY) as copy:  # type: ignore[union-attr]
            copy.write(payload)
    except psycopg.errors.UniqueViolation:
        savepoint.rollback()
        return insert_rows(conn, user_ids, queue_types, scores)
    except Exception as exc:
        # Raised as Connection.execute would: SQLAlchemy's DBAPIError, a lost connection
        # invalidated (as app/statements.py does for the claim path's statements).
        raise driver_error(conn, exc, _COPY, {}, cursor) from exc
    except BaseException:
        conn.invalidate()  # interrupted mid-COPY: the connection's state is unknown
        raise
    savepoint.commit()
    return set(user_ids)


NULL = "\\N"  # COPY's null, in the text format


def existing_user_ids(conn: Connection, user_ids: Sequence[int]) -> set[int]:
    return set(conn.execute(_EXISTING, {"ids": pg_int_array(user_ids)}).scalars())


def _stored(row: Any) -> Stored:
    return Stored(*row[1:])


@dataclass(frozen=True, slots=True)
class Prepared:
    """A batch ready to write: its rows, and the replica's queue type for each user who had no
    score row when it was prepared."""

    rows: Sequence[ScoreRow]
    queue_types: Mapping[int, str | None]


def prepare_batch(engine: Engine, replica: Replica, rows: Sequence[ScoreRow]) -> Prepared:
    """Classify on the replica the users of ``rows`` that have no score row, before any row is
    locked: a replica that does not answer fails the batch here, with nothing written
    (ReplicaUnavailable)."""
    if not rows:
        return Prepared(rows, {})
    with engine.connect() as conn:
        known = existing_user_ids(conn, [r.user_id for r in rows])
        conn.rollback()
    missing = [r.user_id for r in rows if r.user_id not in known]
    # One statement for the batch (up to 10,000 users): per statement, the replica's cost
    # falls as batches grow, and a request's worth is well inside the statement timeout.
    verdicts = (
        classify_in_sql(replica, missing, details=False, batch_size=len(missing)) if missing else {}
    )
    return Prepared(rows, {uid: v.queue_type and str(v.queue_type) for uid, v in verdicts.items()})


def write_prepared(engine: Engine, prepared: Prepared) -> UpsertCounts:
    """One store transaction for the batch (see ``write_batch``)."""
    if not prepared.rows:
        return UpsertCounts()
    with engine.begin() as conn:
        return write_batch(conn, prepared.rows, prepared.queue_types)


def count_batch(engine: Engine, rows: Sequence[ScoreRow]) -> UpsertCounts:
    """What ``write_prepared`` would count for ``rows``, read without a lock or a write: the
    dry run's figures."""
    counts = UpsertCounts()
    if not rows:
        return counts
    with engine.connect() as conn:
        ids = pg_int_array(r.user_id for r in rows)
        found = {row[0]: _stored(row) for row in conn.execute(_READ, {"ids": ids})}
        erased = erased_among(conn, [r.user_id for r in rows])
        conn.rollback()
    for r in rows:
        if r.user_id in erased:
            counts.erased.append(r.user_id)
        elif r.user_id not in found:
            counts.created += 1
        elif next_scores(r, found[r.user_id]) != found[r.user_id].scores():
            counts.updated += 1
        else:
            counts.unchanged += 1
    return counts


def upsert_scores(engine: Engine, replica: Replica, rows: Sequence[ScoreRow]) -> UpsertCounts:
    """Apply one batch of validated rows with distinct user ids (one API request) in one
    transaction of the store, the new users classified on the replica first."""
    return write_prepared(engine, prepare_batch(engine, replica, rows))


def write_batch(
    conn: Connection, rows: Iterable[ScoreRow], queue_types: Mapping[int, str | None]
) -> UpsertCounts:
    """Lock the batch's existing rows, update them by the rule, create the others.

    A row created by another writer between the lock and the insert (discovery, another
    request) is found by the insert's conflict and updated by the next round, under its lock;
    rows are never deleted but by an erasure, which this batch's person locks keep out, so the
    second round finds every one of them. Users whose data was erased are refused.
    """
    pending = {r.user_id: r for r in rows}
    counts = UpsertCounts()
    erased = refuse_erased(conn, sorted(pending))
    for uid in sorted(erased):
        del pending[uid]
        counts.erased.append(uid)
    first = True
    while pending:
        updates: list[tuple[int, tuple[int, int, int, int]]] = []
        for row in conn.execute(_LOCK, {"ids": pg_int_array(sorted(pending))}):
            stored = _stored(row)
            values = next_scores(pending.pop(row.user_id), stored)
            if values == stored.scores():
                counts.unchanged += 1
            else:
                counts.updated += 1
                updates.append((row.user_id, values))
        if updates:
            conn.execute(
                _UPDATE,
                {
                    "user_ids": pg_int_array(u[0] for u in updates),
                    "current": pg_int_array(u[1][0] for u in updates),
                    "base": pg_int_array(u[1][1] for u in updates),
                    "outcome": pg_int_array(u[1][2] for u in updates),
                    "time": pg_int_array(u[1][3] for u in updates),
                },
            )
        if not pending:
            break
        new = sorted(pending.values(), key=lambda r: r.user_id)
        ids, types = [r.user_id for r in new], [queue_types.get(r.user_id) for r in new]
        created = (
            create_rows(conn, ids, types, new) if first else insert_rows(conn, ids, types, new)
        )
        first = False
        counts.created += len(created)
        for uid in created:
            del pending[uid]
    return counts
