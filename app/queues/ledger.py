"""The assignment ledger as supervisors read it: who was given whom, and when."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, text


def held_by(conn: Connection, agent_id: int) -> Row[Any] | None:
    """The agent's live assignment, if any: their latest hand-out, while it is active and in its
    lease (the unique index allows at most one, and nothing is handed to them meanwhile). Looked
    up by agent and time, as the sign-in statement does (app/auth/identity.py says why)."""
    return conn.execute(
        text(
            "SELECT * FROM (SELECT * FROM assignments WHERE agent_id = :a"
            " ORDER BY assigned_at DESC LIMIT 1) latest"
            " WHERE status = 'active' AND lease_expires_at > now()"
        ),
        {"a": agent_id},
    ).one_or_none()


@dataclass(frozen=True, slots=True)
class LedgerFilter:
    agent_id: int | None = None
    user_id: int | None = None
    queue_type: str | None = None
    status: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def list_ledger(conn: Connection, f: LedgerFilter, *, limit: int, offset: int) -> dict[str, Any]:
    """Newest first. Contact details, notes and free-text release reasons never appear here."""
    where = ["true"]
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    for column, value in (
        ("a.agent_id", f.agent_id),
        ("a.user_id", f.user_id),
        ("a.queue_type", f.queue_type),
        ("a.status", f.status),
    ):
        if value is not None:
            key = column.split(".")[1]
            where.append(f"{column} = :{key}")
            params[key] = value
    if f.since is not None:
        where.append("a.assigned_at >= :since")
        params["since"] = f.since
    if f.until is not None:
        where.append("a.assigned_at < :until")
        params["until"] = f.until
    clause = " AND ".join(where)
    total = conn.execute(
        text(f"SELECT count(*) FROM assignments a WHERE {clause}"), params
    ).scalar_one()
    rows = conn.execute(
        text(
            "SELECT a.id, a.agent_id, g.name AS agent_name, a.user_id, a.queue_type, a.source,"
            " a.queue_entry_id, a.claim_id, a.status, a.assigned_at, a.lease_expires_at,"
            " a.finished_at, a.outcome, a.callback_at, a.callback_id"
            f" FROM assignments a JOIN agents g ON g.id = a.agent_id WHERE {clause}"
            " ORDER BY a.assigned_at DESC, a.id LIMIT :limit OFFSET :offset"
        ),
        params,
    ).mappings()
    items = [
        {
            **row,
            "assignment_id": str(row["id"]),
            "queue_entry_id": str(row["queue_entry_id"]) if row["queue_entry_id"] else None,
            "callback_id": str(row["callback_id"]) if row["callback_id"] else None,
        }
        for row in rows
    ]
    return {"items": items, "limit": limit, "offset": offset, "total": total}
