"""API tokens for machines and scripts (SPEC 8.2): named, owned by a person, optionally expiring,
listed (never shown again) and revoked by admins; only their hash is stored."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from app.auth import audit
from app.auth.identity import AgentIdentity
from app.auth.tokens import Kind, hash_token, new_token
from app.errors import InvalidInput, NotFound

_SELECT = (
    "SELECT t.id, t.name, t.agent_id, a.display_name AS owner, t.created_at, t.expires_at,"
    " t.revoked_at FROM api_tokens t JOIN agents a ON a.id = t.agent_id"
)


@dataclass(frozen=True, slots=True)
class TokenRecord:
    id: int
    name: str
    agent_id: int
    owner: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    def view(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "agent_id": self.agent_id,
            "owner": self.owner,
            "created_at": self.created_at.isoformat(),
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }


def list_tokens(conn: Connection) -> list[TokenRecord]:
    rows = conn.execute(text(f"{_SELECT} ORDER BY t.id")).all()
    return [TokenRecord(*r) for r in rows]


def create_token(
    conn: Connection,
    actor: AgentIdentity | None,
    *,
    owner_id: int,
    name: str,
    expires_at: datetime | None,
    address: str | None,
) -> tuple[TokenRecord, str]:
    """A new token for the person ``owner_id``; returns it with the secret, shown once."""
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("name must be 1 to 200 characters", ["body", "name"])
    if not conn.execute(text("SELECT 1 FROM agents WHERE id = :id"), {"id": owner_id}).scalar():
        raise InvalidInput("agent_id must name a person", ["body", "agent_id"])
    if (
        expires_at is not None
        and conn.execute(
            text("SELECT CAST(:at AS timestamptz) <= now()"), {"at": expires_at}
        ).scalar_one()
    ):
        raise InvalidInput("expires_at must be in the future", ["body", "expires_at"])
    token = new_token(Kind.API)
    token_id = conn.execute(
        text(
            "INSERT INTO api_tokens (agent_id, name, token_hash, created_by, expires_at)"
            " VALUES (:owner, :name, :hash, :by, :expires) RETURNING id"
        ),
        {
            "owner": owner_id,
            "name": name,
            "hash": hash_token(token),
            "by": actor.id if actor else None,
            "expires": expires_at,
        },
    ).scalar_one()
    audit.record(
        conn,
        "token_created",
        actor=actor.id if actor else None,
        subject=owner_id,
        address=address,
        details={"token_id": token_id, "name": name},
    )
    return _get(conn, token_id), token


def revoke_token(
    conn: Connection, actor: AgentIdentity | None, token_id: int, *, address: str | None
) -> TokenRecord:
    row = conn.execute(
        text(
            "UPDATE api_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = :id"
            " RETURNING agent_id"
        ),
        {"id": token_id},
    ).one_or_none()
    if row is None:
        raise NotFound("there is no such token")
    audit.record(
        conn,
        "token_revoked",
        actor=actor.id if actor else None,
        subject=row.agent_id,
        address=address,
        details={"token_id": token_id},
    )
    return _get(conn, token_id)


def _get(conn: Connection, token_id: int) -> TokenRecord:
    row = conn.execute(
        text(f"{_SELECT} WHERE t.id = :id"),
        {"id": token_id},
    ).one()
    return TokenRecord(*row)
