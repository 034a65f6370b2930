"""Erasure (SPEC 8.3): a person's data removed in one transaction (``cq_erase``, where the
order of its locks and writes can be read), a tombstone that keeps them from coming back, and
the erasure itself audited by user id."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, text

from app.errors import InvalidInput

MAX_USER_ID = 2**63 - 1

_ERASE = text("SELECT cq_erase(:user_id, :agent_id, :grace)")
_TOMBSTONE = text("SELECT erased_at FROM erased_users WHERE user_id = :user_id")


@dataclass(frozen=True, slots=True)
class Erasure:
    user_id: int
    erased_at: datetime
    removed: dict[str, int]

    def as_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "erased_at": self.erased_at.isoformat(),
            "removed": dict(self.removed),
        }


def check_user_id(user_id: int) -> int:
    if not 1 <= user_id <= MAX_USER_ID:
        raise InvalidInput("user_id must be a positive integer", ["path", "user_id"])
    return user_id


def erase(conn: Connection, user_id: int, *, agent_id: int | None, grace_minutes: int) -> Erasure:
    """In the caller's transaction (it commits): ``cq_erase``, then the tombstone's time (the
    first erasure's: erasing again changes nothing and counts zeros)."""
    check_user_id(user_id)
    removed: dict[str, int] = conn.execute(
        _ERASE, {"user_id": user_id, "agent_id": agent_id, "grace": grace_minutes}
    ).scalar_one()
    erased_at = conn.execute(_TOMBSTONE, {"user_id": user_id}).scalar_one()
    return Erasure(user_id, erased_at, removed)


def erased_at(conn: Connection, user_id: int) -> datetime | None:
    at: datetime | None = conn.execute(_TOMBSTONE, {"user_id": user_id}).scalar()
    return at
