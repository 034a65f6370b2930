"""Lease expiry: an assignment whose lease ran out gives its entry back to the queue."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, text

from app import metrics
from app.queues.kinds import KINDS, QueueType

SWEEP_BATCH = 1000


def sweep_expired_leases(conn: Connection, limit: int = SWEEP_BATCH) -> int:
    """Mark overdue assignments ``expired`` and put their entries back to ``pending``.

    Locks follow the service-wide order (entry, then ledger). Entries are locked with SKIP LOCKED:
    when many claims sweep at once, each expires what it could lock and none queues behind
    another; whatever one skips, the next sweep takes. Returns the number of assignments expired.
    """
    overdue = conn.execute(
        text(
            "SELECT id, queue_type, queue_entry_id FROM assignments"
            " WHERE status = 'active' AND lease_expires_at <= now()"
            " ORDER BY lease_expires_at LIMIT :n"
        ),
        {"n": limit},
    ).all()
    if not overdue:
        return 0
    by_queue: dict[str, list[Any]] = {}
    for row in overdue:
        if row.queue_entry_id is not None:
            by_queue.setdefault(row.queue_type, []).append(row.queue_entry_id)
    skipped: set[Any] = set()
    for queue_type, ids in by_queue.items():
        table = KINDS[QueueType(queue_type)].table
        locked = set(
            conn.execute(
                text(
                    f"SELECT id FROM {table} WHERE id = ANY(:ids)"
                    " ORDER BY id FOR UPDATE SKIP LOCKED"
                ),
                {"ids": ids},
            ).scalars()
        )
        if len(locked) < len(ids):
            existing = set(
                conn.execute(
                    text(f"SELECT id FROM {table} WHERE id = ANY(:ids)"), {"ids": ids}
                ).scalars()
            )
            skipped |= existing - locked
    expired = conn.execute(
        text(
            "UPDATE assignments SET status = 'expired', finished_at = now(), updated_at = now()"
            " WHERE id = ANY(:ids) AND status = 'active' AND lease_expires_at <= now()"
            " RETURNING queue_type, queue_entry_id"
        ),
        {"ids": [row.id for row in overdue if row.queue_entry_id not in skipped]},
    ).all()
    back: dict[str, list[Any]] = {}
    for row in expired:
        metrics.LEASE_EXPIRIES.labels(row.queue_type).inc()
        if row.queue_entry_id is not None:
            back.setdefault(row.queue_type, []).append(row.queue_entry_id)
    for queue_type, ids in back.items():
        conn.execute(
            text(
                f"UPDATE {KINDS[QueueType(queue_type)].table}"
                " SET status = 'pending', assigned_to_agent = NULL, assigned_at = NULL,"
                " updated_at = now() WHERE id = ANY(:ids) AND status = 'assigned'"
            ),
            {"ids": ids},
        )
    return len(expired)
