"""Agents and their API tokens.

Tokens are 256-bit random strings, so a single SHA-256 is the right way to store them: there is
nothing to brute-force, and a slow password hash on every request would dominate a claim's cost.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from app.errors import Conflict, NotFound, Unauthorized

ROLES = ("agent", "supervisor", "scorer")


@dataclass(frozen=True, slots=True)
class AgentIdentity:
    id: int
    name: str
    role: str
    # The supervisors' flag overrides, read in the same round trip as the token, so a claim
    # applies a flag change on its very next request without another query.
    flag_overrides: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"


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


# The agent's identity and the supervisors' flag overrides, for statements that authenticate a
# request in the same round trip as their own work (``ag`` is the agents table).
AGENT_COLUMNS = (
    "ag.id AS agent_id, ag.name AS agent_name, ag.role AS agent_role,"
    " (SELECT coalesce(json_object_agg(f.name, f.value), '{}') FROM feature_flags f) AS agent_flags"
)
ANY_ROLE_BY_TOKEN = "ag.token_hash = :token_hash AND ag.is_active"
# The dashboards' statements (next-user, complete) authenticate with this: a scorer's token is
# for PUT /api/scores only, so there it is no token at all (401).
BY_TOKEN = ANY_ROLE_BY_TOKEN + " AND ag.role <> 'scorer'"


def identity(row: Any) -> AgentIdentity:
    """The AgentIdentity of a row selected with AGENT_COLUMNS."""
    return AgentIdentity(row.agent_id, row.agent_name, row.agent_role, row.agent_flags)


def authenticate(conn: Connection, token: str) -> AgentIdentity:
    row = conn.execute(
        text(f"SELECT {AGENT_COLUMNS} FROM agents ag WHERE {ANY_ROLE_BY_TOKEN}"),
        {"token_hash": hash_token(token)},
    ).one_or_none()
    if row is None:
        raise Unauthorized("a valid agent bearer token is required")
    return identity(row)


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
