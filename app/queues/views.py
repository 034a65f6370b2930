"""The Assignment document agents receive (SPEC 4.2), built from a ledger row."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from app.replica.reader import Contact
from app.timestamps import iso


@dataclass(frozen=True, slots=True)
class AssignmentRow:
    """A ledger row as a hand-out knows it without reading it back: the columns
    ``assignment_view`` reads."""

    id: Any
    status: str
    queue_type: str
    source: str
    queue_entry_id: Any
    user_id: int
    claim_id: int | None
    priority_score: int
    queue_position: int | None
    queue_reason: str | None
    assigned_at: datetime
    lease_expires_at: datetime
    outcome: str | None
    details: dict[str, Any]
    callback_id: Any = None
    callback_due_at: datetime | None = None


def details_document(details: dict[str, Any]) -> dict[str, Any]:
    """Queue-specific details as frozen on the ledger row at hand-out (no personal data): times
    as ISO 8601 strings, as the jsonb column gives them back."""
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in details.items()}


def assignment_view(row: Any, contact: Contact | None, *, resumed: bool = False) -> dict[str, Any]:
    """Contact details go only to the agent while it holds the user: ``user`` is null otherwise."""
    holding = row.status == "active"
    return {
        "assignment_id": str(row.id),
        "status": row.status,
        "queue_type": row.queue_type,
        "source": row.source,
        "queue_entry_id": str(row.queue_entry_id) if row.queue_entry_id else None,
        "user_id": row.user_id,
        "claim_id": row.claim_id,
        "priority_score": row.priority_score,
        "queue_position": row.queue_position,
        "queue_reason": row.queue_reason,
        "assigned_at": iso(row.assigned_at),
        "lease_expires_at": iso(row.lease_expires_at),
        "resumed": resumed,
        "outcome": row.outcome,
        "callback_id": str(row.callback_id) if row.callback_id else None,
        "callback_due_at": iso(row.callback_due_at),
        "user": (
            {
                "first_name": contact.first_name,
                "last_name": contact.last_name,
                "phone_number": contact.phone_number,
                "email_address": contact.email_address,
            }
            if holding and contact is not None
            else None
        ),
        "details": dict(row.details or {}),
    }


def score_view(score: dict[str, Any] | None) -> dict[str, Any] | None:
    if score is None:
        return None
    return {**score, "next_call_after": iso(score["next_call_after"])}
