"""Concise writers for replica rows and score rows, shared by tests and benchmarks' checks."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, insert, text

from app.auth.people import create_agent, create_person
from app.auth.sessions import COOKIE, start_session
from app.auth.tokens import csrf_token
from app.replica.schema import claim_requirements, claims, users

_ids = itertools.count(1_000_000)

LONG_AGO = datetime(2025, 1, 1, tzinfo=UTC)


def next_id() -> int:
    return next(_ids)


OWN_PHONE = "own"


def own_phone(user_id: int) -> str:
    """A number of the range reserved for fiction, one per user (ids a thousand apart share it):
    a do_not_contact suppresses the number for everyone who has it, so users must not all share
    one unless a test means them to."""
    return f"07700 900{user_id % 1000:03d}"


class Replica:
    """Builds the claims platform's rows for one test, on PostgreSQL or MariaDB."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def user(
        self,
        user_id: int,
        *,
        enabled: bool = True,
        signed: bool = True,
        created_at: datetime = LONG_AGO,
        phone: str | None = OWN_PHONE,
        **extra: Any,
    ) -> int:
        row = {
            "id": user_id,
            "is_enabled": enabled,
            "current_signature_file_id": 7 if signed else None,
            "first_name": "Test",
            "last_name": f"User{user_id}",
            "phone_number": own_phone(user_id) if phone == OWN_PHONE else phone,
            "email_address": f"user{user_id}@example.invalid",
            "status": "active",
            "created_at": created_at,
            **extra,
        }
        with self.engine.begin() as conn:
            conn.execute(insert(users), row)
        return user_id

    def claim(
        self,
        user_id: int,
        *,
        status: str = "open",
        created_at: datetime = LONG_AGO,
        claim_id: int | None = None,
    ) -> int:
        cid = claim_id or next_id()
        with self.engine.begin() as conn:
            conn.execute(
                insert(claims),
                {"id": cid, "user_id": user_id, "status": status, "created_at": created_at},
            )
        return cid

    def requirement(
        self,
        claim_id: int,
        type_: str = "proof_of_address",
        *,
        status: str = "pending",
        reason: str | None = None,
        created_at: datetime = LONG_AGO,
        requirement_id: int | None = None,
    ) -> int:
        rid = requirement_id or next_id()
        with self.engine.begin() as conn:
            conn.execute(
                insert(claim_requirements),
                {
                    "id": rid,
                    "claim_id": claim_id,
                    "type": type_,
                    "status": status,
                    "claim_requirement_reason": reason,
                    "created_at": created_at,
                },
            )
        return rid

    def unsigned(self, user_id: int, **kw: Any) -> int:
        """A user who belongs in unsigned_users: enabled, an open claim, no signature."""
        self.user(user_id, signed=False, **kw)
        self.claim(user_id)
        return user_id

    def outstanding(self, user_id: int, *types: str, **kw: Any) -> int:
        """A user who belongs in outstanding_requests: signed, an open claim, pending documents."""
        self.user(user_id, signed=True, **kw)
        cid = self.claim(user_id)
        for t in types or ("proof_of_address",):
            self.requirement(cid, t)
        return user_id


def add_scores(engine: Engine, rows: Iterable[dict[str, Any]]) -> None:
    """Insert score rows; defaults make a lead callable now and past any cooling period."""
    defaults = {
        "current_score": 0,
        "next_call_after": None,
        "is_active": True,
        "current_queue_type": None,
        "created_at": datetime.now(UTC) - timedelta(days=1),
    }
    payload = [{**defaults, **row} for row in rows]
    if not payload:
        return
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO user_call_scores"
                " (user_id, current_score, next_call_after, is_active, current_queue_type,"
                " created_at)"
                " VALUES (:user_id, :current_score, :next_call_after, :is_active,"
                " :current_queue_type, :created_at)"
            ),
            payload,
        )


@dataclass
class Agent:
    """An agent made for a test, with the headers its dashboard would send."""

    name: str
    id: int
    auth: dict[str, str]


def new_agent(store: Engine, name: str, role: str = "agent") -> Agent:
    with store.begin() as conn:
        token = create_agent(conn, name, role)
        agent_id = conn.execute(
            text("SELECT id FROM agents WHERE name = :n"), {"n": name}
        ).scalar_one()
    return Agent(name, int(agent_id), {"Authorization": f"Bearer {token}"})


def signed_in(
    store: Engine,
    email: str,
    role: str = "agent",
    queues: tuple[str, ...] = ("unsigned_users", "outstanding_requests"),
) -> Agent:
    """A person made for a test and signed in, with the headers their console would send: the
    session cookie, and the session's CSRF token (which only a write needs; a GET carries it
    harmlessly)."""
    with store.begin() as conn:
        person = create_person(
            conn,
            None,
            email=email,
            display_name=email.split("@")[0],
            role=role,
            allowed_queues=queues,
            address=None,
            base_url=None,
        ).person
        token = start_session(
            conn, person.id, method="password", max_hours=12, user_agent=None, address=None
        )
    return Agent(
        email, person.id, {"Cookie": f"{COOKIE}={token}", "X-CSRF-Token": csrf_token(token)}
    )


def lapse(store: Engine, assignment_id: Any) -> None:
    """The assignment's lease runs out, as the clock would have it (a sweep has not run)."""
    with store.begin() as conn:
        conn.execute(
            text(
                "UPDATE assignments SET lease_expires_at = now() - interval '1 second'"
                " WHERE id = CAST(:id AS uuid)"
            ),
            {"id": str(assignment_id)},
        )


def make_due(store_engine: Engine, user_id: int, minutes_ago: int = 1) -> None:
    """Time passes for a callback: its time (and the person's next_call_after, which a booking
    sets to the same moment) moves that many minutes into the past, on the database's clock."""
    moment = {"u": user_id, "m": minutes_ago}
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE callbacks SET due_at = now() - make_interval(mins => :m)"
                " WHERE user_id = :u AND status IN ('scheduled', 'assigned')"
            ),
            moment,
        )
        conn.execute(
            text(
                "UPDATE user_call_scores SET next_call_after = now() - make_interval(mins => :m)"
                " WHERE user_id = :u"
            ),
            moment,
        )
