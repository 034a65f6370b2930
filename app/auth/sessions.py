"""Sessions in PostgreSQL (SPEC 8.2): a random token of 256 bits in the ``callqueue_session``
cookie (HttpOnly, SameSite=Lax, Path=/, Secure), only its hash in the ``sessions`` table; an idle
timeout and an absolute one, both on the database's clock (app/auth/identity.py checks them on
every request); ended by sign-out, and at once by a change to the person (app/auth/people.py)."""

from __future__ import annotations

from sqlalchemy import Connection, text

from app.auth import audit
from app.auth.tokens import Kind, hash_token, new_token

COOKIE = "callqueue_session"
USER_AGENT_MAX = 200


def start_session(
    conn: Connection,
    person_id: int,
    *,
    method: str,
    max_hours: int,
    user_agent: str | None,
    address: str | None,
) -> str:
    """A new session for a person who has just proved who they are; returns its token (the
    cookie's value), audited as a sign-in."""
    token = new_token(Kind.SESSION)
    conn.execute(
        text(
            "INSERT INTO sessions (agent_id, token_hash, expires_at, user_agent, method)"
            " VALUES (:id, :hash, now() + make_interval(hours => :hours), :agent, :method)"
        ),
        {
            "id": person_id,
            "hash": hash_token(token),
            "hours": max_hours,
            "agent": (user_agent or "")[:USER_AGENT_MAX] or None,
            "method": method,
        },
    )
    audit.record(
        conn,
        "signed_in",
        actor=person_id,
        subject=person_id,
        address=address,
        details={"method": method},
    )
    return token


def end_session(conn: Connection, token: str, *, address: str | None) -> bool:
    """Sign-out: the session the cookie names ends (whatever its state); audited."""
    row = conn.execute(
        text(
            "UPDATE sessions SET ended_at = now(), end_reason = 'signed_out'"
            " WHERE token_hash = :hash AND ended_at IS NULL RETURNING agent_id"
        ),
        {"hash": hash_token(token)},
    ).one_or_none()
    if row is None:
        return False
    audit.record(conn, "signed_out", actor=row.agent_id, subject=row.agent_id, address=address)
    return True
