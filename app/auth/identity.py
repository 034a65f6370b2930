"""Who is calling: the one place a credential (an API token, a session's cookie) becomes a person.

One statement per request reads the person by the credential's hash, with what every request
needs beside it: the supervisors' run-time changes (flag overrides, the calling rules' stored
change), which every process must apply on its next request, and the database's clock. A session
is valid while it has not ended, its absolute expiry has not passed, and it was seen within the
idle timeout; the same statement notes that it was seen (at most every half minute, so a busy
console does not write on every request). A deactivated person is refused whatever they present.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from enum import StrEnum

from sqlalchemy import Connection

from app.auth.tokens import csrf_token, hash_token
from app.errors import Unauthorized
from app.statements import Statement

ROLES = ("agent", "supervisor", "admin", "scorer")
# The roles that run the floor (SPEC 8.2): everything operational of sections 3-7.
SUPERVISING = ("supervisor", "admin")


class Via(StrEnum):
    TOKEN = "token"
    SESSION = "session"


@dataclass(frozen=True, slots=True)
class Credential:
    """What a request presented: a bearer token, or the session cookie."""

    via: Via
    secret: str


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who is calling: what every service receives, never the credential itself."""

    id: int
    name: str
    role: str
    allowed_queues: tuple[str, ...] = ("unsigned_users", "outstanding_requests")
    display_name: str = ""
    email: str | None = None

    @property
    def is_supervisor(self) -> bool:
        """A supervisor or an admin: the floor's operational routes (SPEC 8.2)."""
        return self.role in SUPERVISING

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


@dataclass(frozen=True, slots=True)
class Holding:
    """The unchanging head of the agent's active assignment (holder, user, queue, entry, when
    handed out; its lease may have run out): what a completion needs before it reads the
    replica, none of which changes after the hand-out."""

    id: uuid.UUID
    user_id: int
    queue_type: str
    queue_entry_id: uuid.UUID | None
    assigned_at: datetime


@dataclass(frozen=True, slots=True)
class Authenticated:
    """A person, and what every request needs besides, read in the same round trip. With
    ``holding=True``, also the head of the assignment the person holds, if any (complete)."""

    agent: AgentIdentity
    flag_overrides: Mapping[str, str]
    # (timezone, hours, holidays) as stored by supervisors (a None field keeps the
    # environment's), or None when nobody changed the rules.
    calling_rules: tuple[str | None, str | None, list[date] | None] | None
    now: datetime
    via: Via
    # A session's: its id, and the CSRF token its cookie-authenticated writes must carry.
    session_id: uuid.UUID | None = None
    csrf_token: str | None = None
    holding: Holding | None = None


_PERSON = (
    "SELECT ag.id, ag.name, ag.role, ag.allowed_queues, ag.display_name, ag.email,"
    " now() AS now, {session_id} AS session_id,"
    " (SELECT array_agg(ARRAY[f.name, f.value]) FROM feature_flags f) AS flags,"
    " cr.id IS NOT NULL AS rules_changed, cr.timezone, cr.hours, cr.holidays{holding}"
)
_HOLDING = (
    ", h.id AS holding_id, h.user_id AS holding_user_id, h.queue_type AS holding_queue_type,"
    " h.queue_entry_id AS holding_entry_id, h.assigned_at AS holding_assigned_at"
)
# The assignment the person holds: their latest hand-out, if it is still active. A person holds
# at most one (the partial unique index on assignments (agent_id) WHERE status = 'active'), and
# it is their latest, since nothing is handed to them while they hold one. Looked up through
# (agent_id, assigned_at), not through the partial index: when the last ANALYZE saw no live
# assignment, the planner read the whole partial index for it, every dead version a long-open
# snapshot keeps included (thousands of entries per request beside a held snapshot).
_HOLDING_JOIN = (
    " LEFT JOIN LATERAL (SELECT a.id, a.user_id, a.queue_type, a.queue_entry_id, a.assigned_at,"
    " a.status FROM assignments a WHERE a.agent_id = ag.id ORDER BY a.assigned_at DESC LIMIT 1)"
    " h ON h.status = 'active'"
)

_BY_TOKEN = (
    _PERSON + " FROM api_tokens t JOIN agents ag ON ag.id = t.agent_id"
    " LEFT JOIN calling_rules cr ON true{join}"
    " WHERE t.token_hash = :secret_hash AND t.revoked_at IS NULL"
    " AND (t.expires_at IS NULL OR t.expires_at > now()) AND ag.is_active"
)
# A live session: not ended, before its absolute expiry, seen within the idle timeout. Seen now
# is noted by the CTE (a data-modifying CTE runs whether or not the query reads it), at most
# every 30 seconds; the SELECT reads the row as it was.
_LIVE = (
    " s.ended_at IS NULL AND s.expires_at > now()"
    " AND s.last_seen_at > now() - make_interval(mins => :idle_minutes)"
)
_BY_SESSION = (
    "WITH seen AS (UPDATE sessions s SET last_seen_at = now()"
    " WHERE s.token_hash = :secret_hash AND" + _LIVE + ""
    " AND s.last_seen_at < now() - interval '30 seconds' RETURNING s.id)"
    + _PERSON
    + " FROM sessions s JOIN agents ag ON ag.id = s.agent_id"
    " LEFT JOIN calling_rules cr ON true{join}"
    " WHERE s.token_hash = :secret_hash AND" + _LIVE + " AND ag.is_active"
)


def _statement(template: str, session_id: str, holding: bool) -> Statement:
    return Statement(
        template.format(
            session_id=session_id,
            holding=_HOLDING if holding else "",
            join=_HOLDING_JOIN if holding else "",
        )
    )


_AUTHENTICATE: dict[tuple[Via, bool], Statement] = {
    (Via.TOKEN, False): _statement(_BY_TOKEN, "NULL::uuid", False),
    (Via.TOKEN, True): _statement(_BY_TOKEN, "NULL::uuid", True),
    (Via.SESSION, False): _statement(_BY_SESSION, "s.id", False),
    (Via.SESSION, True): _statement(_BY_SESSION, "s.id", True),
}

REFUSED = "a valid bearer token or a signed-in session is required"


def authenticate(
    conn: Connection, credential: Credential, *, idle_minutes: int, holding: bool = False
) -> Authenticated:
    """The one place a credential becomes a person. Unknown, expired, revoked, ended or
    deactivated: Unauthorized. ``holding``: also read the head of the person's active
    assignment, in the same statement."""
    row = _AUTHENTICATE[(credential.via, holding)].one_or_none(
        conn, {"secret_hash": hash_token(credential.secret), "idle_minutes": idle_minutes}
    )
    if row is None:
        raise Unauthorized(REFUSED)
    return Authenticated(
        AgentIdentity(
            row.id,
            row.name,
            row.role,
            tuple(row.allowed_queues),
            row.display_name,
            row.email,
        ),
        dict(row.flags or ()),
        (row.timezone, row.hours, row.holidays) if row.rules_changed else None,
        row.now,
        credential.via,
        row.session_id,
        csrf_token(credential.secret) if credential.via is Via.SESSION else None,
        Holding(
            row.holding_id,
            row.holding_user_id,
            row.holding_queue_type,
            row.holding_entry_id,
            row.holding_assigned_at,
        )
        if holding and row.holding_id is not None
        else None,
    )


def authenticate_token(conn: Connection, token: str, *, holding: bool = False) -> Authenticated:
    """An API token's person (the token is all a command or a script knows)."""
    return authenticate(conn, Credential(Via.TOKEN, token), idle_minutes=0, holding=holding)
