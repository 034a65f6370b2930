"""Lease expiry: an assignment whose lease ran out gives its entry back to the queue."""

from __future__ import annotations

from sqlalchemy import Connection, text

from app.queues.kinds import KINDS, QueueType

SWEEP_BATCH = 1000


def sweep_expired_leases(conn: Connection) -> int:
    """Mark overdue assignments ``expired`` and put their entries back to ``pending``.

    Locks follow the service-wide order (entry, then ledger): entries are locked first, then the
    ledger rows are re-checked under lock, so a sweep never deadlocks with a claim or an outcome.
    Returns the number of assignments expired.
    """
    overdue = conn.execute(
        text(
            "SELECT id, queue_type, queue_entry_id FROM assignments"
            " WHERE status = 'active' AND lease_expires_at <= now()"
            " ORDER BY lease_expires_at LIMIT :n"
        ),
        {"n": SWEEP_BATCH},
    ).all()
    if not overdue:
        return 0
    entry_ids: dict[str, list[object]] = {}
    for row in overdue:
        if row.queue_entry_id is not None:
            entry_ids.setdefault(row.queue_type, []).append(row.queue_entry_id)
    for queue_type, ids in entry_ids.items():
        table = KINDS[QueueType(queue_type)].table
        conn.execute(
            text(f"SELECT id FROM {table} WHERE id = ANY(:ids) ORDER BY id FOR UPDATE"),
            {"ids": ids},
        )
    expired = conn.execute(
        text(
            "UPDATE assignments SET status = 'expired', finished_at = now(), updated_at = now()"
            " WHERE id = ANY(:ids) AND status = 'active' AND lease_expires_at <= now()"
            " RETURNING queue_type, queue_entry_id"
        ),
        {"ids": [row.id for row in overdue]},
    ).all()
    back: dict[str, list[object]] = {}
    for row in expired:
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
