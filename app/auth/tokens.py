"""The service's secrets: API tokens, session tokens and set-password link tokens.

Each is 256 random bits with a prefix that says what it is (a token pasted in the wrong place is
recognisable, and a secret scanner can find them), and only its SHA-256 is stored: with that much
randomness there is nothing to brute-force, and a slow password hash on every request would
dominate a claim's cost. None is ever logged (the access log included: app/logs.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from enum import StrEnum


class Kind(StrEnum):
    API = "cq_"
    SESSION = "cqs_"
    LINK = "cqp_"


def new_token(kind: Kind) -> str:
    return kind.value + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def csrf_token(session_token: str) -> str:
    """The session's CSRF token (SPEC 8.2: sent back in ``X-CSRF-Token``), derived from the
    session's own token, so nothing more is stored, and neither can be had from the other's
    stored hash."""
    return hashlib.sha256(b"callqueue csrf\0" + session_token.encode()).hexdigest()


def same(presented: str | None, expected: str) -> bool:
    """Constant-time comparison of a presented secret."""
    return presented is not None and hmac.compare_digest(presented.encode(), expected.encode())
