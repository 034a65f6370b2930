"""The audit of sign-in and people (SPEC 8.2): every change to a person or a token, every
sign-in, failed sign-in and sign-out, with who did it, whom it was about, when and from which
address; never a password, a token or a link."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, text

_RECORD = text(
    "INSERT INTO auth_events (action, actor_id, subject_id, address, details)"
    " VALUES (:action, :actor, :subject, :address, CAST(:details AS jsonb))"
)


def record(
    conn: Connection,
    action: str,
    *,
    actor: int | None,
    subject: int | None,
    address: str | None,
    details: dict[str, Any] | None = None,
) -> None:
    """In the caller's transaction, so an event exists if and only if what it reports does."""

    conn.execute(
        _RECORD,
        {
            "action": action,
            "actor": actor,
            "subject": subject,
            "address": address,
            "details": json.dumps(details or {}),
        },
    )
