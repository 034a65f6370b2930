"""A population's swap (SPEC 3.2): the queue's new snapshot in place of the old, atomically.

One short transaction: the new entries are staged in a temporary table (binary ``COPY``), the
queue's swap lock is taken exclusively, lapsed leases are swept, the old snapshot's unassigned
entries are deleted and the staged ones inserted. MVCC makes the switch atomic: other connections
see the old set of pending entries until the commit, then the new one, never an empty or partial
queue. Claims go on taking the old snapshot's front until the swap's last statements, and wait
(for the swap lock) only then, when they find no entry to take (``cq_claim``). Completions,
releases and sweeps go on under their row locks throughout.
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
# The old snapshot's first pending entries that claims keep taking while the swap writes the new
# one: a tenth of them, at most 1,000, far more than claims take in a large swap's few seconds
# (100 a second at full stretch); a small queue's swap is over in milliseconds.
FRONT_SHARE = 10
FRONT_MAX = 1000


def swap(
    engine: Engine,
    kind: QueueKind,
    walk: Walk,
    available_from: datetime,
    assert_lock_held: Callable[[Connection], None],
) -> tuple[int, int, int]:
    """Replace the queue's snapshot atomically; returns (removed, kept_assigned, populated).

    MVCC makes the switch atomic: other connections see the old set of pending entries until
    the commit, then the new one. While the new snapshot is written, claims go on taking the
    old one's first pending entries (its front: a tenth, at most 1,000), which the swap leaves
    alone until its last statements: it deletes every other unassigned entry, inserts the new
    ones, and only then
    re-places the front's entries still pending (their position, figures and reason in the new
    snapshot) or drops them. So a claim waits only through those last few statements: one that
    finds no entry to take (the swap holds every old one then) waits for the queue's swap lock,
    taken here exclusively, and looks again in the new snapshot instead of answering "empty".
    Nothing else waits for the swap, and the swap waits only for the row a claim holds through
    its replica read; an entry given back meanwhile (a release, a sweep) stays pending where it
    is, and the insert leaves its person alone.

    Left out of the new snapshot: anyone busy now (``cq_busy``: a live hand-out, an open
    callback, which is then their only way back), handed out or called since the walk began
    (the walk saw them as candidates, but they have been dealt with since), or whose score row
    no longer puts them in this queue now. Held leads the walk staged are in it when they were
    given back in between (SPEC 8.1: nobody falls out of the queue).
    """
    table = kind.table
    columns = ("user_id", "claim_id", "priority_score", "queue_reason", *kind.detail_columns)
    listed = ", ".join(columns)
    with engine.begin() as conn:
        conn.execute(text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
        conn.execute(
            text(
                f"CREATE TEMP TABLE cq_stage ON COMMIT DROP AS"
                f" SELECT 0 AS position, {listed} FROM {table} WITH NO DATA"
            )
        )
        copy_rows(conn, "cq_stage", f"position, {listed}", entry_rows(kind, walk.kept))
        conn.execute(
            text("SELECT pg_advisory_xact_lock(:key, :id)"),
            {"key": SWAP_LOCK_KEY, "id": kind.swap_lock_id},
        )
        assert_lock_held(conn)
        sweep_expired_leases(conn)
        # The old snapshot's front, which claims keep taking while the rest is written.
        conn.execute(
            text(
                f"CREATE TEMP TABLE cq_front ON COMMIT DROP AS SELECT id, user_id FROM {table}"
                " WHERE status = 'pending' ORDER BY queue_position, id"
                f" LIMIT least(:most, (SELECT count(*) FROM {table} WHERE status = 'pending')"
                " / :share)"
            ),
            {"most": FRONT_MAX, "share": FRONT_SHARE},
        )
        removed = conn.execute(
            text(
                f"DELETE FROM {table} e WHERE e.status <> 'assigned'"
                " AND NOT EXISTS (SELECT 1 FROM cq_front f WHERE f.id = e.id)"
            )
        ).rowcount
        # The new snapshot in serving order, positions 1..N, with the rules as they stand.
        conn.execute(
            text(
                f"""
                CREATE TEMP TABLE cq_ranked ON COMMIT DROP AS
                SELECT {", ".join(f"s.{c}" for c in columns)},
                       row_number() OVER (ORDER BY s.position) AS position
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
                """
            ),
            {"built_since": walk.started, "queue_type": str(kind.queue_type)},
        )
        conn.execute(
            text(
                f"""
                INSERT INTO {table} ({listed}, queue_position, status, available_from)
                SELECT {listed}, position, 'pending', :available_from
                  FROM cq_ranked r
                 WHERE NOT EXISTS (SELECT 1 FROM cq_front f WHERE f.user_id = r.user_id)
                   AND NOT EXISTS (SELECT 1 FROM {table} e
                                    WHERE e.user_id = r.user_id
                                      AND e.status IN ('pending', 'assigned'))
                 ORDER BY position
                ON CONFLICT (user_id) WHERE status IN ('pending', 'assigned') DO NOTHING
                """
            ),
            {"available_from": available_from},
        )
        # Last, the front: a few rows, the only ones claims may find locked, just before the
        # commit. Still pending and in the new snapshot: re-placed; otherwise (gone from it,
        # or marked by a claim meanwhile) dropped. Handed out meanwhile: a live call, kept.
        updates = ", ".join(f"{c} = r.{c}" for c in columns[1:])
        # A re-placed entry counts as the old one removed and a new one populated, as the
        # contract's figures (and a dry run's) count every unassigned entry of the old snapshot.
        removed += conn.execute(
            text(
                f"UPDATE {table} e SET {updates}, queue_position = r.position,"
                " available_from = :available_from, updated_at = now()"
                " FROM cq_front f JOIN cq_ranked r ON r.user_id = f.user_id"
                " WHERE e.id = f.id AND e.status = 'pending'"
            ),
            {"available_from": available_from},
        ).rowcount
        removed += conn.execute(
            text(
                f"DELETE FROM {table} e USING cq_front f WHERE e.id = f.id"
                " AND e.status <> 'assigned' AND (e.status <> 'pending'"
                "  OR NOT EXISTS (SELECT 1 FROM cq_ranked r WHERE r.user_id = e.user_id))"
            )
        ).rowcount
        # Claims look from the start of the new snapshot (app/queues/fronts.py).
        conn.execute(
            text(
                "INSERT INTO queue_fronts (queue_type, position) VALUES (:q, 0)"
                " ON CONFLICT (queue_type) DO UPDATE SET position = 0, updated_at = now()"
            ),
            {"q": str(kind.queue_type)},
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
