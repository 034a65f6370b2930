"""Agents and their API tokens.

Tokens are 256-bit random strings, so a single SHA-256 is the right way to store them: there is
nothing to brute-force, and a slow password hash on every request would dominate a claim's cost.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, NotFound, Unauthorized
from app.statements import Statement

ROLES = ("agent", "supervisor", "scorer")


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    """Who is calling: what every service receives, never the token itself."""

    id: int
    name: str
    role: str

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"


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
    """An agent, and what every request needs besides, read in the same round trip: the
    supervisors' run-time changes (flag overrides, the calling rules' stored change), which
    every process must apply on its next request, and the database's clock. With
    ``holding=True``, also the head of the assignment the agent holds, if any (complete)."""

    agent: AgentIdentity
    flag_overrides: Mapping[str, str]
    # (timezone, hours, holidays) as stored by supervisors (a None field keeps the
    # environment's), or None when nobody changed the rules.
    calling_rules: tuple[str | None, str | None, list[date] | None] | None
    now: datetime
    holding: Holding | None = None


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def create_agent(conn: Connection, name: str, role: str = "agent") -> str:
    """Create an agent and return its token; only the hash is kept."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    token = "cq_" + secrets.token_urlsafe(32)
    try:
        with conn.begin_nested():
            conn.execute(
                text("INSERT INTO agents (name, role, token_hash) VALUES (:n, :r, :h)"),
                {"n": name, "r": role, "h": hash_token(token)},
            )
    except IntegrityError:
        raise Conflict("an agent with that name already exists") from None
    return token


# The supervisors' flag overrides as [name, value] pairs (a text array: no JSON to parse on every
# request).
_AUTHENTICATED = (
    "SELECT ag.id, ag.name, ag.role, now() AS now,"
    " (SELECT array_agg(ARRAY[f.name, f.value]) FROM feature_flags f) AS flags,"
    " cr.id IS NOT NULL AS rules_changed, cr.timezone, cr.hours, cr.holidays{holding}"
    " FROM agents ag LEFT JOIN calling_rules cr ON true{join}"
    " WHERE ag.token_hash = :token_hash AND ag.is_active"
)
_AUTHENTICATE = {
    False: Statement(_AUTHENTICATED.format(holding="", join="")),
    # The partial unique index on assignments (agent_id) WHERE status = 'active' allows at most
    # one row to join: the agent's row is never repeated.
    True: Statement(
        _AUTHENTICATED.format(
            holding=", h.id AS holding_id, h.user_id AS holding_user_id,"
            " h.queue_type AS holding_queue_type, h.queue_entry_id AS holding_entry_id,"
            " h.assigned_at AS holding_assigned_at",
            join=" LEFT JOIN assignments h ON h.agent_id = ag.id AND h.status = 'active'",
        )
    ),
}


def authenticate(conn: Connection, token: str, *, holding: bool = False) -> Authenticated:
    """The one place a token becomes an agent. Unknown or deactivated: Unauthorized.
    ``holding``: also read the head of the agent's active assignment, in the same statement."""
    row = _AUTHENTICATE[holding].one_or_none(conn, {"token_hash": hash_token(token)})
    if row is None:
        raise Unauthorized("a valid agent bearer token is required")
    return Authenticated(
        AgentIdentity(row.id, row.name, row.role),
        dict(row.flags or ()),
        (row.timezone, row.hours, row.holidays) if row.rules_changed else None,
        row.now,
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


@dataclass(frozen=True, slots=True)
class AgentRecord:
    id: int
    name: str
    role: str
    is_active: bool
    created_at: datetime
    deactivated_at: datetime | None


def list_agents(conn: Connection) -> list[AgentRecord]:
    rows = conn.execute(
        text("SELECT id, name, role, is_active, created_at, deactivated_at FROM agents ORDER BY id")
    )
    return [AgentRecord(*row) for row in rows]


def deactivate_agent(conn: Connection, name: str) -> None:
    done = conn.execute(
        text(
            "UPDATE agents SET is_active = false, deactivated_at = coalesce(deactivated_at, now())"
            " WHERE name = :n"
        ),
        {"n": name},
    ).rowcount
    if not done:
        raise NotFound("no agent has that name")
