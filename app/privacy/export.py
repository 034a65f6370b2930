"""Access requests (SPEC 8.3): one JSON document with everything the service holds about a
person, from every place ``app/privacy/tables.py`` lists, each item with when it was recorded;
and the request itself audited by user id."""

from __future__ import annotations

import json
import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, text

from app.errors import CallqueueError
from app.privacy.erasure import check_user_id, erased_at
from app.replica.reader import Replica
from app.rules.suppression import SuppressionList

# Each section: a statement reading the person's rows, oldest first.
SECTIONS: dict[str, str] = {
    "score": "SELECT * FROM user_call_scores WHERE user_id = :u",
    "queue_entries": (
        "SELECT 'unsigned_users' AS queue_type, to_jsonb(e) AS entry FROM unsigned_users_queue e"
        " WHERE e.user_id = :u"
        " UNION ALL SELECT 'outstanding_requests', to_jsonb(e) FROM outstanding_requests_queue e"
        " WHERE e.user_id = :u"
    ),
    "callbacks": (
        "SELECT c.*, coalesce((SELECT jsonb_agg(to_jsonb(ch) ORDER BY ch.changed_at)"
        " FROM callback_changes ch WHERE ch.callback_id = c.id), '[]') AS changes"
        " FROM callbacks c WHERE c.user_id = :u ORDER BY c.created_at"
    ),
    "ledger": "SELECT * FROM assignments WHERE user_id = :u ORDER BY assigned_at",
    "transitions": "SELECT * FROM queue_transitions WHERE user_id = :u ORDER BY created_at",
    "invalidations": "SELECT * FROM entry_invalidations WHERE user_id = :u ORDER BY created_at",
    # Events about them told to other systems (SPEC 8.4), and to whom: the recipients.
    "events": (
        "SELECT ev.id, ev.type, ev.occurred_at, ev.data,"
        " coalesce((SELECT jsonb_agg(jsonb_build_object('endpoint_id', d.endpoint_id,"
        " 'url', e.url, 'description', e.description,"
        " 'status', d.status, 'attempts', d.attempts, 'finished_at', d.finished_at)"
        " ORDER BY d.created_at) FROM webhook_deliveries d"
        " JOIN webhook_endpoints e ON e.id = d.endpoint_id WHERE d.event_id = ev.id), '[]')"
        " AS deliveries FROM webhook_events ev WHERE ev.user_id = :u ORDER BY ev.position"
    ),
    "requests": (
        "SELECT id, action, agent_id, at FROM data_requests WHERE user_id = :u ORDER BY at"
    ),
}
_AUDIT = text("INSERT INTO data_requests (action, user_id, agent_id) VALUES ('export', :u, :agent)")
_SUPPRESSED = text("SELECT added_at FROM suppressed_numbers WHERE phone_hash = :hash")


def _plain(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _number_state(
    conn: Connection, replica: Replica, suppression: SuppressionList, user_id: int
) -> dict[str, Any]:
    """Whether the person's current number (the claims platform's) is on the do-not-call list;
    the number itself is the claims platform's to give."""
    try:
        contact = replica.fetch_contacts(user_id)
    except CallqueueError as exc:
        return {"suppressed": None, "why": f"the claims platform could not be read: {exc.detail}"}
    if contact is None or not contact.callable:
        return {"suppressed": None, "why": "the claims platform has no number for this person"}
    key = suppression.phone_key(contact.phone_number)
    if key is None:
        return {"suppressed": None, "why": "the claims platform's number cannot be parsed"}
    added = conn.execute(_SUPPRESSED, {"hash": key}).scalar()
    return {"suppressed": added is not None, "since": _plain(added)}


def export(
    conn: Connection,
    replica: Replica,
    suppression: SuppressionList,
    user_id: int,
    *,
    agent_id: int | None,
) -> dict[str, Any]:
    """The document, in the caller's transaction (it commits: the audit row is written). An
    erased person's is the tombstone alone."""
    check_user_id(user_id)
    gone = erased_at(conn, user_id)
    conn.execute(_AUDIT, {"u": user_id, "agent": agent_id})
    if gone is not None:
        return {"user_id": user_id, "erased": True, "erased_at": gone.isoformat()}
    document: dict[str, Any] = {
        "user_id": user_id,
        "erased": False,
        "exported_at": _plain(conn.execute(text("SELECT now()")).scalar_one()),
    }
    for section, sql in SECTIONS.items():
        rows = [_plain(dict(row)) for row in conn.execute(text(sql), {"u": user_id}).mappings()]
        document[section] = rows[0] if section == "score" and rows else rows
    if document["score"] == []:
        document["score"] = None
    document["number"] = _number_state(conn, replica, suppression, user_id)
    return document


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False, sort_keys=False)
