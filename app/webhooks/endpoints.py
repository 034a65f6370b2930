"""Webhook endpoints (SPEC 8.4), for admins in the API, the CLI and the console: one set of
functions each of them calls, every change audited (``auth_events``: who, when, which endpoint;
never a secret).

A secret is ``whsec_`` + base64 of 32 random bytes, shown once: on creation and on rotation. A
rotation keeps the old secret signing beside the new one for 24 hours, so receivers can switch
without losing an event.
"""

from __future__ import annotations

import base64
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from app.auth import audit
from app.config import Settings
from app.errors import InvalidInput, NotFound
from app.webhooks.delivery import EVENT_TYPES, ROTATION_OVERLAP, TEST_EVENT
from app.webhooks.targets import TargetRefused, check_url

MAX_DESCRIPTION = 500
# How long a test event's delivery waits for the request that made it before a background
# sender may take it.
TEST_LEASE_SECONDS = 120

_COLUMNS = "id, url, event_types, description, enabled, disabled_reason, created_at"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made a change, for the audit: an admin (None: the operator at the command line)."""

    agent_id: int | None
    address: str | None = None


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def endpoint_dict(row: Any) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "url": row.url,
        "event_types": list(row.event_types),
        "description": row.description,
        "enabled": row.enabled,
        "disabled_reason": row.disabled_reason,
        "created_at": row.created_at.isoformat(),
    }


def checked_url(url: str, settings: Settings) -> str:
    try:
        return check_url(
            url.strip(),
            https_only=settings.webhook_targets_checked,
            private_allowed=settings.webhook_allow_private or not settings.webhook_targets_checked,
        )
    except TargetRefused as exc:
        raise InvalidInput(str(exc), ["body", "url"]) from exc


def checked_types(event_types: Sequence[str]) -> list[str]:
    unknown = sorted(set(event_types) - set(EVENT_TYPES))
    if unknown:
        raise InvalidInput(
            f"unknown event types {', '.join(unknown)}; known: {', '.join(EVENT_TYPES)}",
            ["body", "event_types"],
        )
    if not event_types:
        raise InvalidInput("subscribe to at least one event type", ["body", "event_types"])
    return sorted(set(event_types), key=EVENT_TYPES.index)


def checked_description(description: str) -> str:
    if "\x00" in description:
        raise InvalidInput("the description may not hold a NUL character", ["body", "description"])
    if len(description) > MAX_DESCRIPTION:
        raise InvalidInput(
            f"the description is longer than {MAX_DESCRIPTION} characters",
            ["body", "description"],
        )
    return description


def create(
    conn: Connection,
    settings: Settings,
    actor: Actor,
    *,
    url: str,
    event_types: Sequence[str],
    description: str = "",
) -> dict[str, Any]:
    """A new endpoint, with its secret (the only time it is shown)."""
    secret = new_secret()
    row = conn.execute(
        text(
            "INSERT INTO webhook_endpoints (url, event_types, description, secret, created_by)"
            f" VALUES (:url, :types, :description, :secret, :by) RETURNING {_COLUMNS}"
        ),
        {
            "url": checked_url(url, settings),
            "types": checked_types(event_types),
            "description": checked_description(description),
            "secret": secret,
            "by": actor.agent_id,
        },
    ).one()
    _audit(conn, "webhook_created", actor, row.id, {"event_types": list(row.event_types)})
    return {**endpoint_dict(row), "secret": secret}


def listed(conn: Connection) -> list[dict[str, Any]]:
    rows = conn.execute(
        text(f"SELECT {_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id")
    ).all()
    return [endpoint_dict(r) for r in rows]


def get(conn: Connection, endpoint_id: uuid.UUID, *, lock: bool = False) -> Any:
    row = conn.execute(
        text(
            f"SELECT {_COLUMNS} FROM webhook_endpoints WHERE id = :id"
            + (" FOR UPDATE" if lock else "")
        ),
        {"id": endpoint_id},
    ).one_or_none()
    if row is None:
        raise NotFound(f"no webhook endpoint {endpoint_id}")
    return row


def update(
    conn: Connection,
    settings: Settings,
    actor: Actor,
    endpoint_id: uuid.UUID,
    changes: dict[str, Any],
) -> dict[str, Any]:
    """Change the URL, the event types, the description, or enable/disable it. Enabling clears
    the reason it was disabled and its failing streak: its pending deliveries go out again."""
    get(conn, endpoint_id, lock=True)
    values: dict[str, Any] = {"id": endpoint_id}
    sets = []
    if "url" in changes:
        values["url"] = checked_url(changes["url"], settings)
        sets.append("url = :url")
    if "event_types" in changes:
        values["types"] = checked_types(changes["event_types"])
        sets.append("event_types = :types")
    if "description" in changes:
        values["description"] = checked_description(changes["description"])
        sets.append("description = :description")
    if "enabled" in changes:
        values["enabled"] = bool(changes["enabled"])
        sets.append(
            "enabled = :enabled,"
            " disabled_reason = CASE WHEN :enabled THEN NULL"
            "  ELSE coalesce(disabled_reason, 'disabled by an admin') END,"
            " failing_since = CASE WHEN :enabled THEN NULL ELSE failing_since END"
        )
    if sets:
        conn.execute(
            text(
                f"UPDATE webhook_endpoints SET {', '.join(sets)}, updated_at = now() WHERE id = :id"
            ),
            values,
        )
        _audit(conn, "webhook_changed", actor, endpoint_id, {"fields": sorted(changes)})
    return endpoint_dict(get(conn, endpoint_id))


def delete(conn: Connection, actor: Actor, endpoint_id: uuid.UUID) -> None:
    """The endpoint, its deliveries and its log go; events other endpoints still need stay."""
    get(conn, endpoint_id, lock=True)
    conn.execute(text("DELETE FROM webhook_endpoints WHERE id = :id"), {"id": endpoint_id})
    _audit(conn, "webhook_deleted", actor, endpoint_id, {})


def rotate(conn: Connection, actor: Actor, endpoint_id: uuid.UUID) -> dict[str, Any]:
    """A new secret, shown once; the old one signs beside it for 24 hours."""
    get(conn, endpoint_id, lock=True)
    secret = new_secret()
    row = conn.execute(
        text(
            "UPDATE webhook_endpoints SET previous_secret = secret,"
            " previous_secret_until = now() + :overlap, secret = :secret, updated_at = now()"
            " WHERE id = :id RETURNING previous_secret_until"
        ),
        {"id": endpoint_id, "secret": secret, "overlap": ROTATION_OVERLAP},
    ).one()
    _audit(conn, "webhook_secret_rotated", actor, endpoint_id, {})
    return {
        **endpoint_dict(get(conn, endpoint_id)),
        "secret": secret,
        "previous_secret_expires_at": row.previous_secret_until.isoformat(),
    }


def add_test_event(conn: Connection, actor: Actor, endpoint_id: uuid.UUID) -> uuid.UUID:
    """A ``webhook.test`` event for this endpoint alone, with its delivery (the next number in
    the endpoint's sequence); the caller sends it. Returns the delivery's id."""
    get(conn, endpoint_id, lock=True)
    event_id = conn.execute(
        text(
            "INSERT INTO webhook_events (type, data, dispatched, endpoint_id)"
            " VALUES (:type, jsonb_build_object('endpoint_id', CAST(:id AS text)), true, :id)"
            " RETURNING id"
        ),
        {"type": TEST_EVENT, "id": endpoint_id},
    ).scalar_one()
    delivery_id = conn.execute(
        text(
            "WITH taken AS (UPDATE webhook_endpoints SET next_seq = next_seq + 1"
            "  WHERE id = :id RETURNING next_seq - 1 AS seq)"
            " INSERT INTO webhook_deliveries (event_id, endpoint_id, seq, next_attempt_at,"
            "  locked_until)"
            " SELECT :event, :id, seq, now(), now() + make_interval(secs => :lease) FROM taken"
            " RETURNING id"
        ),
        # Leased to the caller from the start: a background sender leaves it to the caller's
        # deliver_now, and takes it up only if the caller dies before sending it.
        {"id": endpoint_id, "event": event_id, "lease": TEST_LEASE_SECONDS},
    ).scalar_one()
    _audit(conn, "webhook_tested", actor, endpoint_id, {})
    return uuid.UUID(str(delivery_id))


def attempts(conn: Connection, endpoint_id: uuid.UUID, limit: int) -> list[dict[str, Any]]:
    """The endpoint's delivery log, newest first."""
    get(conn, endpoint_id)
    rows = conn.execute(
        text(
            "SELECT a.id, d.event_id, ev.type, a.attempt, a.status_code, a.duration_ms, a.error,"
            "       a.attempted_at, d.seq, d.status AS delivery_status"
            "  FROM webhook_attempts a"
            "  JOIN webhook_deliveries d ON d.id = a.delivery_id"
            "  JOIN webhook_events ev ON ev.id = d.event_id"
            " WHERE a.endpoint_id = :id"
            " ORDER BY a.attempted_at DESC, a.attempt DESC LIMIT :limit"
        ),
        {"id": endpoint_id, "limit": limit},
    ).all()
    return [
        {
            "id": str(r.id),
            "event_id": str(r.event_id),
            "event_type": r.type,
            "attempt": r.attempt,
            "status_code": r.status_code,
            "duration_ms": r.duration_ms,
            "error": r.error,
            "attempted_at": r.attempted_at.isoformat(),
            "seq": r.seq,
            "delivery_status": r.delivery_status,
        }
        for r in rows
    ]


def redeliver(conn: Connection, actor: Actor, attempt_id: uuid.UUID) -> dict[str, Any]:
    """Send that attempt's event to its endpoint again (the same ``webhook-id`` and ``seq``), on
    a new round of the retry schedule, as soon as a sender gets to it."""
    row = conn.execute(
        text(
            "UPDATE webhook_deliveries d SET status = 'pending', round_attempts = 0,"
            " next_attempt_at = now(), finished_at = NULL"
            " FROM webhook_attempts a"
            " WHERE a.id = :id AND d.id = a.delivery_id"
            " RETURNING d.id, d.event_id, d.endpoint_id, d.seq"
        ),
        {"id": attempt_id},
    ).one_or_none()
    if row is None:
        raise NotFound(f"no webhook delivery attempt {attempt_id}")
    _audit(conn, "webhook_redelivered", actor, row.endpoint_id, {"event_id": str(row.event_id)})
    return {
        "delivery_id": str(row.id),
        "event_id": str(row.event_id),
        "endpoint_id": str(row.endpoint_id),
        "seq": row.seq,
        "status": "pending",
    }


def problems(conn: Connection) -> list[str]:
    """For the health report: endpoints disabled, or failing now (by id and description; never
    the URL, which may carry a token)."""
    rows = conn.execute(
        text(
            "SELECT id, description, enabled, disabled_reason, failing_since"
            " FROM webhook_endpoints WHERE NOT enabled OR failing_since IS NOT NULL"
            " ORDER BY created_at, id"
        )
    ).all()
    found = []
    for r in rows:
        name = f"webhook endpoint {r.id}" + (f" ({r.description})" if r.description else "")
        if not r.enabled:
            found.append(f"{name} is disabled: {r.disabled_reason}")
        else:
            found.append(f"{name} has failed every attempt since {_at(r.failing_since)}")
    return found


def _at(value: datetime) -> str:
    return value.isoformat(timespec="seconds")


def _audit(
    conn: Connection,
    action: str,
    actor: Actor,
    endpoint_id: Any,
    details: dict[str, Any],
) -> None:
    audit.record(
        conn,
        action,
        actor=actor.agent_id,
        subject=None,
        address=actor.address,
        details={"endpoint_id": str(endpoint_id), **details},
    )
