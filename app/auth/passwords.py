"""Passwords (SPEC 8.2): argon2id hashes (pwdlib), one message for a wrong email or a wrong
password, a per-email lockout after five failures in 15 minutes (whatever the source address),
and one-time set-password links (app/auth/people.py makes them)."""

from __future__ import annotations

import math
from datetime import timedelta

from pwdlib import PasswordHash
from sqlalchemy import Connection, text

from app.auth import audit
from app.auth.people import end_sessions
from app.auth.tokens import hash_token
from app.errors import BadSignInRequest, InvalidInput, SignInLocked, Unauthorized

MIN_LENGTH = 12
MAX_LENGTH = 1024
LOCK_AFTER = 5
LOCK_WINDOW = timedelta(minutes=15)
WRONG = "the email or the password is wrong"

# pg_advisory_xact_lock's first key: this lock's namespace ("sign" in ASCII), the second the
# email's hash.
SIGN_IN_LOCK = int.from_bytes(b"sign", "big")
_ONE_AT_A_TIME = text("SELECT pg_advisory_xact_lock(:ns, hashtext(:email))").bindparams(
    ns=SIGN_IN_LOCK
)

_hasher = PasswordHash.recommended()
# Verified when nobody has the email, so a wrong email takes as long as a wrong password.
_DECOY = _hasher.hash("callqueue: nobody has this password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def check_strength(password: str, loc: list[str | int]) -> None:
    if not MIN_LENGTH <= len(password) <= MAX_LENGTH:
        raise InvalidInput(f"a password must be {MIN_LENGTH} to {MAX_LENGTH} characters long", loc)


def _locked_for(conn: Connection, email: str) -> int | None:
    """Seconds the email stays locked, or None: five failures within 15 minutes lock it for
    15 minutes from the fifth."""
    failures = (
        conn.execute(
            text(
                "SELECT extract(epoch FROM now() - failed_at) AS ago FROM sign_in_failures"
                " WHERE email = :email AND failed_at > now() - make_interval(secs => :window * 2)"
                " ORDER BY failed_at DESC LIMIT :n"
            ),
            {"email": email, "window": LOCK_WINDOW.total_seconds(), "n": LOCK_AFTER},
        )
        .scalars()
        .all()
    )
    window = LOCK_WINDOW.total_seconds()
    if len(failures) < LOCK_AFTER or float(failures[-1]) - float(failures[0]) > window:
        return None
    left = window - float(failures[0])
    return math.ceil(left) if left > 0 else None


def sign_in(conn: Connection, email: str, password: str, *, address: str | None) -> int:
    """The person's id when the email and the password are right, they are active and not
    locked out; else Unauthorized (one message for both) or SignInLocked. Failures are
    recorded and audited in this transaction: the caller commits whatever the answer."""
    email = email.strip().lower()
    # One attempt per email at a time (a transaction lock, released at commit): parallel guesses
    # queue behind each other and each sees the failures before it, so the fifth locks the email
    # however many arrive at once.
    conn.execute(_ONE_AT_A_TIME, {"email": email})
    locked = _locked_for(conn, email)
    if locked is not None:
        raise SignInLocked(
            "too many failed sign-ins for this email: try again later", retry_after=locked
        )
    row = conn.execute(
        text(
            "SELECT id, password_hash FROM agents"
            " WHERE lower(email) = :email AND is_active AND password_hash IS NOT NULL"
        ),
        {"email": email},
    ).one_or_none()
    valid = _hasher.verify(password, row.password_hash if row else _DECOY)
    if row is None or not valid:
        conn.execute(text("INSERT INTO sign_in_failures (email) VALUES (:email)"), {"email": email})
        audit.record(
            conn,
            "sign_in_failed",
            actor=None,
            subject=row.id if row else None,
            address=address,
            details={"method": "password"},
        )
        raise Unauthorized(WRONG)
    conn.execute(text("DELETE FROM sign_in_failures WHERE email = :email"), {"email": email})
    return int(row.id)


def set_password(conn: Connection, link_token: str, password: str, *, address: str | None) -> int:
    """Use a one-time link: set the person's password; returns their id. A used, expired or
    unknown link is BadSignInRequest (400); a short password InvalidInput (422)."""
    check_strength(password, ["body", "password"])
    row = conn.execute(
        text(
            "UPDATE password_links l SET used_at = now() FROM agents a"
            " WHERE l.token_hash = :hash AND l.used_at IS NULL AND l.expires_at > now()"
            " AND a.id = l.agent_id AND a.is_active RETURNING l.agent_id"
        ),
        {"hash": hash_token(link_token)},
    ).one_or_none()
    if row is None:
        raise BadSignInRequest(
            "this link cannot be used (it was used already, has expired, or is unknown):"
            " ask a supervisor for a new one"
        )
    conn.execute(
        text("UPDATE agents SET password_hash = :hash, updated_at = now() WHERE id = :id"),
        {"hash": hash_password(password), "id": row.agent_id},
    )
    end_sessions(conn, row.agent_id, "password_set")
    audit.record(conn, "password_set", actor=row.agent_id, subject=row.agent_id, address=address)
    return int(row.agent_id)


def link_is_usable(conn: Connection, link_token: str) -> bool:
    return bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM password_links l JOIN agents a ON a.id = l.agent_id"
                " WHERE l.token_hash = :hash AND l.used_at IS NULL AND l.expires_at > now()"
                " AND a.is_active)"
            ),
            {"hash": hash_token(link_token)},
        ).scalar_one()
    )
