"""A population's swap (SPEC 3.2): the queue's new snapshot in place of the old, atomically.

One short transaction: the new entries are staged in a temporary table (binary ``COPY``), the
queue's swap lock is taken exclusively, lapsed leases are swept, the old snapshot's unassigned
entries are deleted and the staged ones inserted. MVCC makes the switch atomic: other connections
see the old set of pending entries until the commit, then the new one, never an empty or partial
queue. The swap lock is only for claims that find no entry to take while the delete holds every
old one: they wait for it and look again in the new snapshot instead of answering "empty"
(``cq_claim``). Claims, completions, releases and sweeps go on under their row locks meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from app.queues.kinds import SWAP_LOCK_KEY, QueueKind, queue_reason
from app.queues.leases import sweep_expired_leases
from app.queues.walk import Candidate, Walk
from app.replica.classification import Verdict

# The swap allows itself longer than a request's statements (5 s) to wait for a row a claim
# holds through its replica read.
SWAP_LOCK_TIMEOUT = "15s"


def swap(
    engine: Engine,
    kind: QueueKind,
    walk: Walk,
    available_from: datetime,
    assert_lock_held: Callable[[Connection], None],
) -> tuple[int, int, int]:
    """Replace the queue's snapshot atomically; returns (removed, kept_assigned, populated).

    MVCC makes the switch atomic: other connections see the old set of pending entries
    until the commit, then the new one. The queue's swap lock, taken exclusively, is for
    claims that find no entry to take (the DELETE below holds every old one): they wait for
    it and look again in the new snapshot instead of answering "empty". Nothing else waits
    for it, and the swap waits for nothing but row locks: an entry a claim holds through its
    replica read is deleted once that claim is done with it (or kept, now assigned); an
    entry given back meanwhile (a release, a sweep) stays pending where it is, and the
    insert leaves its user alone.

    Left out of the new snapshot: anyone busy now (``cq_busy``: a live hand-out, an open
    callback, which is then their only way back), handed out or called since the walk
    began (the walk saw them as candidates, but they have been dealt with since), or whose
    score row no longer puts them in this queue now. Held leads the walk staged are in it
    when they were given back in between (SPEC 8.1: nobody falls out of the queue).
    """
    kept = walk.kept
    table = kind.table
    columns = ", ".join(
        ("user_id", "claim_id", "priority_score", "queue_reason", *kind.detail_columns)
    )
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        conn.execute(
            text(
                f"CREATE TEMP TABLE cq_stage ON COMMIT DROP AS"
                f" SELECT 0 AS position, {columns} FROM {table} WITH NO DATA"
            )
        )
        copy_rows(conn, "cq_stage", f"position, {columns}", entry_rows(kind, kept))
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:key, :id)"),
            {"key": SWAP_LOCK_KEY, "id": kind.swap_lock_id},
        )
        assert_lock_held(conn)
        sweep_expired_leases(conn)
        removed = conn.execute(text(f"DELETE FROM {table} WHERE status <> 'assigned'")).rowcount
        conn.execute(
            text(
                f"""
                INSERT INTO {table} ({columns}, queue_position, status, available_from)
                SELECT {", ".join(f"s.{c}" for c in columns.split(", "))},
                       row_number() OVER (ORDER BY s.position), 'pending', :available_from
                  FROM cq_stage s
                  JOIN user_call_scores sc ON sc.user_id = s.user_id
                 WHERE sc.is_active AND sc.current_queue_type = :queue_type
                   AND (sc.next_call_after IS NULL OR sc.next_call_after <= now())
                   AND NOT EXISTS (SELECT 1 FROM cq_busy b WHERE b.user_id = s.user_id)
                   AND NOT EXISTS (SELECT 1 FROM assignments a
                                    WHERE a.user_id = s.user_id
                                      AND (a.assigned_at >= :built_since
                                           OR (a.status = 'completed'
                                               AND a.finished_at >= :built_since)))
                   AND NOT EXISTS (SELECT 1 FROM {table} e
                                    WHERE e.user_id = s.user_id
                                      AND e.status IN ('pending', 'assigned'))
                ON CONFLICT (user_id) WHERE status IN ('pending', 'assigned') DO NOTHING
                """
            ),
            {
                "available_from": available_from,
                "built_since": walk.started,
                "queue_type": str(kind.queue_type),
            },
        )
        # The new snapshot as it stands: its pending entries (an entry given back during
        # the swap among them) and the live calls carried over.
        populated, kept_assigned = conn.execute(
            text(
                f"SELECT count(*) FILTER (WHERE status = 'pending'),"
                f" count(*) FILTER (WHERE status = 'assigned') FROM {table}"
            )
        ).one()
    return removed, int(kept_assigned), int(populated)


def entry_rows(
    kind: QueueKind, kept: Sequence[tuple[Candidate, Verdict]]
) -> Iterator[tuple[Any, ...]]:
    for position, (cand, verdict) in enumerate(kept, start=1):
        fields = verdict.entry_fields
        yield (
            position,
            cand.user_id,
            fields.get("claim_id"),
            cand.score,
            queue_reason(kind, cand.score),
            *(fields[c] for c in kind.detail_columns),
        )


def copy_rows(conn: Connection, table: str, columns: str, rows: Iterator[tuple[Any, ...]]) -> None:
    """Binary COPY: about half the client time of text COPY at 100,000 rows, and psycopg
    encodes a list for a jsonb column itself. Binary needs every column's exact type; the
    table's catalog entry gives them."""
    types: dict[str, int] = dict(
        conn.execute(
            text(
                "SELECT attname, atttypid::int FROM pg_attribute"
                " WHERE attrelid = CAST(:table AS regclass) AND attnum > 0"
            ),
            {"table": table},
        ).all()
    )
    raw = conn.connection.driver_connection
    statement = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
    with raw.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[union-attr]
        copy.set_types([types[c] for c in columns.split(", ")])
        for row in rows:
            copy.write_row(row)


def snapshot_counts(engine: Engine, kind: QueueKind) -> tuple[int, int]:
    """What a swap would drop and keep, counting an entry whose lease ran out as dropped,
    as the swap's sweep would make it."""
    with engine.connect() as conn:
        row = conn.execute(
            text(
                f"""
                SELECT count(*) FILTER (WHERE NOT live) AS removed,
                       count(*) FILTER (WHERE live) AS assigned
                  FROM (SELECT e.status = 'assigned' AND NOT EXISTS (
                               SELECT 1 FROM assignments a
                                WHERE a.queue_entry_id = e.id AND a.status = 'active'
                                  AND a.lease_expires_at <= now()) AS live
                          FROM {kind.table} e) AS snapshot
                """
            )
        ).one()
    return int(row.removed), int(row.assigned)
