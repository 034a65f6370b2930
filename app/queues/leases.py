"""Lease expiry: an assignment whose lease ran out gives its entry back to the queue."""

from __future__ import annotations

from sqlalchemy import Connection

from app import metrics
from app.statements import Statement

SWEEP_BATCH = 1000

_SWEEP = Statement("SELECT cq_sweep(:limit) AS expired")


def sweep_expired_leases(conn: Connection, limit: int = SWEEP_BATCH) -> int:
    """Mark up to ``limit`` overdue assignments ``expired`` and put their entries back to
    ``pending`` (``cq_sweep``, in the claim functions' migration: the swap locks shared, then
    entries and ledger rows with SKIP LOCKED, so concurrent sweeps never wait for one another and
    never run beside a swap). Returns the number of assignments expired; the caller commits."""
    expired: dict[str, int] = _SWEEP.scalar(conn, {"limit": limit}) or {}
    for queue_type, count in expired.items():
        metrics.LEASE_EXPIRIES.labels(queue_type).inc(count)
    return sum(expired.values())
