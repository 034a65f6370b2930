"""Callbacks (SPEC 7.2): what agents and supervisors see of them, and what supervisors change.

Booking, serving, completing and expiring callbacks are part of the claim path (migrations/sql/:
``cq_claim`` with source ``callback``, ``cq_hand_out``, ``cq_complete``, ``cq_sweep``), and a
reclassification moves or cancels them (``cq_reclassify``); this module reads them and carries the
supervisors' two changes, cancel and reassign (``cq_change_callback``), each audited in
``callback_changes``.

Timing words, all on the database's clock:

* **due**: scheduled and ``due_at`` has come;
* **overdue**: still scheduled more than ``CALLBACK_GRACE_MINUTES`` after ``due_at``: a promise
  about to be broken (the health report is degraded while any is);
* **late**: handed out for the first time more than ``CALLBACK_GRACE_MINUTES`` after
  ``due_at``: a promise kept, but late.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, text

from app.auth.identity import AgentIdentity
from app.errors import Conflict, InvalidInput, NotFound
from app.timestamps import iso
from app.vocabulary import QueueType

log = logging.getLogger(__name__)

OPEN_STATUSES = ("scheduled", "assigned")

_COLUMNS = (
    "c.id, c.user_id, c.queue_type, c.due_at, c.status, c.owner_agent_id, c.created_at,"
    " c.first_handed_out_at, c.finished_at, c.cancel_reason"
)


# The health report and /metrics count late hand-outs over the last day.
LATE_WINDOW_MINUTES = 24 * 60


def callback_counts(
    conn: Connection, grace_minutes: int, late_since_minutes: int
) -> dict[str, dict[str, int]]:
    """Per queue type, on the database's clock: ``scheduled`` (waiting), ``due`` (scheduled and
    due now), ``overdue`` (still scheduled ``grace_minutes`` after due), ``assigned`` (with an
    agent now) and ``late`` (first handed out more than ``grace_minutes`` after due, in the last
    ``late_since_minutes``). One statement over the open callbacks (a partial index) and the
    recent hand-outs."""
    figures = {
        q: {"scheduled": 0, "due": 0, "overdue": 0, "assigned": 0, "late": 0}
        for q in map(str, QueueType)
    }
    rows = conn.execute(
        text(
            "SELECT queue_type,"
            " count(*) FILTER (WHERE status = 'scheduled') AS scheduled,"
            " count(*) FILTER (WHERE status = 'scheduled' AND due_at <= now()) AS due,"
            " count(*) FILTER (WHERE status = 'scheduled'"
            "   AND due_at + make_interval(mins => :grace) < now()) AS overdue,"
            " count(*) FILTER (WHERE status = 'assigned') AS assigned,"
            " 0 AS late"
            " FROM callbacks WHERE status IN ('scheduled', 'assigned') GROUP BY queue_type"
            " UNION ALL"
            " SELECT queue_type, 0, 0, 0, 0, count(*) FROM callbacks"
            " WHERE first_handed_out_at > now() - make_interval(mins => :since)"
            "   AND first_handed_out_at > due_at + make_interval(mins => :grace)"
            " GROUP BY queue_type"
        ),
        {"grace": grace_minutes, "since": late_since_minutes},
    ).all()
    for row in rows:
        queue = figures[row.queue_type]
        for name in queue:
            queue[name] += int(getattr(row, name))
    return figures


def callback_view(row: Any) -> dict[str, Any]:
    """A callback as the API shows it: never the person's contact details."""
    return {
        "id": str(row.id),
        "user_id": row.user_id,
        "queue_type": row.queue_type,
        "due_at": row.due_at.isoformat(),
        "status": row.status,
        "agent_id": row.owner_agent_id,
        "booked_at": row.created_at.isoformat(),
        "first_handed_out_at": iso(row.first_handed_out_at),
        "finished_at": iso(row.finished_at),
        "cancel_reason": row.cancel_reason,
    }


@dataclass(frozen=True, slots=True)
class CallbackFilter:
    status: str | None = None
    agent_id: int | None = None
    due_before: datetime | None = None


class CallbackService:
    def __init__(self, engine: Engine, grace_minutes: int) -> None:
        self.engine = engine
        self.grace_minutes = grace_minutes

    # -- reading -------------------------------------------------------------------------------

    def mine(self, agent: AgentIdentity) -> list[dict[str, Any]]:
        """The agent's open callbacks, soonest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM callbacks c"
                    " WHERE c.owner_agent_id = :agent AND c.status IN ('scheduled', 'assigned')"
                    " ORDER BY c.due_at, c.id"
                ),
                {"agent": agent.id},
            ).all()
        return [callback_view(r) for r in rows]

    def listing(self, f: CallbackFilter, *, limit: int, offset: int) -> dict[str, Any]:
        """Supervisors' listing, soonest due first; without a status, the open ones."""
        where = ["c.status = ANY(:statuses)"]
        params: dict[str, Any] = {
            "statuses": [f.status] if f.status else list(OPEN_STATUSES),
            "limit": limit,
            "offset": offset,
        }
        if f.agent_id is not None:
            where.append("c.owner_agent_id = :agent")
            params["agent"] = f.agent_id
        if f.due_before is not None:
            where.append("c.due_at < :due_before")
            params["due_before"] = f.due_before
        clause = " AND ".join(where)
        with self.engine.connect() as conn:
            total = conn.execute(
                text(f"SELECT count(*) FROM callbacks c WHERE {clause}"), params
            ).scalar_one()
            rows = conn.execute(
                text(
                    f"SELECT {_COLUMNS} FROM callbacks c WHERE {clause}"
                    " ORDER BY c.due_at, c.id LIMIT :limit OFFSET :offset"
                ),
                params,
            ).all()
        return {"items": [callback_view(r) for r in rows], "total": total}

    # -- supervisors' changes ------------------------------------------------------------------

    def cancel(
        self, supervisor: AgentIdentity, callback_id: uuid.UUID, reason: str | None
    ) -> dict[str, Any]:
        """Cancel an open callback. One being served stays with its agent until the call ends;
        the callback itself is no longer kept."""
        row = self._change(callback_id, "cancel", supervisor, None, reason)
        log.info("callback.cancelled", extra={"agent_id": supervisor.id, "user_id": row.user_id})
        return callback_view(row)

    def reassign(
        self,
        supervisor: AgentIdentity,
        callback_id: uuid.UUID,
        agent_id: int,
        reason: str | None,
    ) -> dict[str, Any]:
        """Give an open callback to another active agent: it is theirs first from now on."""
        with self.engine.connect() as conn:
            target = conn.execute(
                text("SELECT role, is_active FROM agents WHERE id = :id"), {"id": agent_id}
            ).one_or_none()
        if target is None or not target.is_active or target.role == "scorer":
            raise InvalidInput(
                "agent_id must be an active agent or supervisor", ["body", "agent_id"]
            )
        row = self._change(callback_id, "reassign", supervisor, agent_id, reason)
        log.info(
            "callback.reassigned",
            extra={"agent_id": supervisor.id, "user_id": row.user_id, "to_agent_id": agent_id},
        )
        return callback_view(row)

    def _change(
        self,
        callback_id: uuid.UUID,
        action: str,
        supervisor: AgentIdentity,
        to_agent: int | None,
        reason: str | None,
    ) -> Any:
        """``cq_change_callback``: the change and its audit row (``callback_changes``, with the
        free-text reason) in one transaction, under the callback's row lock. 404 unknown, 409
        no longer open."""
        with self.engine.begin() as conn:
            result = conn.execute(
                _CHANGE,
                {
                    "id": callback_id,
                    "action": action,
                    "by": supervisor.id,
                    "to": to_agent,
                    "reason": reason,
                },
            ).scalar_one()
            row = conn.execute(
                text(f"SELECT {_COLUMNS} FROM callbacks c WHERE c.id = :id"), {"id": callback_id}
            ).one_or_none()
        if result == "not_found" or row is None:
            raise NotFound("there is no such callback")
        if result == "not_open":
            raise Conflict(f"the callback is {row.status}")
        return row


_CHANGE = text("SELECT cq_change_callback(:id, :action, :by, :to, :reason)")
