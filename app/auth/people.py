"""People and their API tokens (SPEC 8.2): who may do what to whom, every change audited.

Supervisors manage agents; admins manage everyone. A supervisor touching a supervisor or an admin,
or giving anyone a role above agent, is refused. Deactivating a person, changing their role or
queues, or resetting their password ends all their sessions at once (their API tokens stop
working with the person: every request checks ``is_active``). Nobody can leave the service
without an active admin.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text
from sqlalchemy.exc import IntegrityError

from app.auth import audit
from app.auth.identity import ROLES, AgentIdentity
from app.auth.tokens import Kind, hash_token, new_token
from app.errors import Conflict, Forbidden, InvalidInput, NotFound
from app.vocabulary import QueueType

ALL_QUEUES = tuple(str(q) for q in QueueType)
# An email: something, an @, something; no whitespace and no control characters (listed, so
# that JSON Schema's, Rust's and Python's different ideas of \s agree on what is refused).
_NOT_IN_EMAIL = r"\s@\x00-\x1f\x7f-\x9f\ufeff"
EMAIL_PATTERN = rf"^[^{_NOT_IN_EMAIL}]+@[^{_NOT_IN_EMAIL}]+$"
_EMAIL = re.compile(EMAIL_PATTERN)
LINK_VALID = timedelta(hours=72)

_COLUMNS = (
    "id, name, email, display_name, role, allowed_queues, is_active, created_at,"
    " deactivated_at, password_hash IS NOT NULL AS has_password,"
    " oidc_subject IS NOT NULL AS has_identity_provider"
)


@dataclass(frozen=True, slots=True)
class Person:
    id: int
    name: str
    email: str | None
    display_name: str
    role: str
    allowed_queues: tuple[str, ...]
    is_active: bool
    created_at: datetime
    deactivated_at: datetime | None
    has_password: bool
    has_identity_provider: bool

    def view(self) -> dict[str, Any]:
        """A person as the API shows them: never a secret, nor whether a secret is weak."""
        return {
            "id": self.id,
            "email": self.email,
            "display_name": self.display_name,
            "role": self.role,
            "allowed_queues": list(self.allowed_queues),
            "is_active": self.is_active,
            "has_password": self.has_password,
            "has_identity_provider": self.has_identity_provider,
            "created_at": self.created_at.isoformat(),
            "deactivated_at": self.deactivated_at.isoformat() if self.deactivated_at else None,
        }


def _person(row: Any) -> Person:
    return Person(
        row.id,
        row.name,
        row.email,
        row.display_name,
        row.role,
        tuple(row.allowed_queues),
        row.is_active,
        row.created_at,
        row.deactivated_at,
        row.has_password,
        row.has_identity_provider,
    )


@dataclass(frozen=True, slots=True)
class Created:
    person: Person
    # The one-time set-password link, shown once (None when passwords are off).
    link: str | None


# -- permissions ---------------------------------------------------------------------------------


def may_manage(actor: AgentIdentity, role: str) -> bool:
    """Supervisors manage agents; admins manage everyone."""
    return actor.is_admin or (actor.role == "supervisor" and role == "agent")


def _require_may_manage(actor: AgentIdentity, role: str, what: str) -> None:
    if not may_manage(actor, role):
        raise Forbidden(f"a {actor.role} cannot {what} a person whose role is {role}")


def _check_queues(queues: Sequence[str]) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(queues))
    if not chosen or any(q not in ALL_QUEUES for q in chosen):
        raise InvalidInput(
            f"allowed_queues must name one or more of {', '.join(ALL_QUEUES)}",
            ["body", "allowed_queues"],
        )
    return chosen


def _normalise_email(email: str) -> str:
    email = email.strip()
    if len(email) > 254 or not _EMAIL.fullmatch(email):
        raise InvalidInput("email must be an email address", ["body", "email"])
    return email


# -- reading -------------------------------------------------------------------------------------


def get_person(conn: Connection, person_id: int, *, lock: bool = False) -> Person:
    row = conn.execute(
        text(f"SELECT {_COLUMNS} FROM agents WHERE id = :id" + (" FOR UPDATE" if lock else "")),
        {"id": person_id},
    ).one_or_none()
    if row is None:
        raise NotFound("there is no such person")
    return _person(row)


def find_by_email(conn: Connection, email: str) -> Person | None:
    row = conn.execute(
        text(f"SELECT {_COLUMNS} FROM agents WHERE lower(email) = lower(:email)"),
        {"email": email.strip()},
    ).one_or_none()
    return _person(row) if row else None


def list_people(conn: Connection) -> list[Person]:
    rows = conn.execute(text(f"SELECT {_COLUMNS} FROM agents ORDER BY id")).all()
    return [_person(r) for r in rows]


# -- changing people -----------------------------------------------------------------------------


def create_person(
    conn: Connection,
    actor: AgentIdentity | None,
    *,
    email: str,
    display_name: str,
    role: str,
    allowed_queues: Sequence[str] = ALL_QUEUES,
    address: str | None,
    base_url: str | None,
) -> Created:
    """A new person, and (with ``base_url``: passwords are on) their one-time link. ``actor``
    None: the operator at the command line."""
    if role not in ROLES:
        raise InvalidInput(f"role must be one of {', '.join(ROLES)}", ["body", "role"])
    if actor is not None:
        _require_may_manage(actor, role, "create")
    email = _normalise_email(email)
    queues = _check_queues(allowed_queues)
    display_name = display_name.strip() or email
    try:
        with conn.begin_nested():
            person_id = conn.execute(
                text(
                    "INSERT INTO agents (name, email, display_name, role, allowed_queues)"
                    " VALUES (lower(:email), :email, :display_name, :role, :queues)"
                    " RETURNING id"
                ),
                {
                    "email": email,
                    "display_name": display_name,
                    "role": role,
                    "queues": list(queues),
                },
            ).scalar_one()
    except IntegrityError:
        raise Conflict("a person with that email already exists") from None
    audit.record(
        conn,
        "person_created",
        actor=actor.id if actor else None,
        subject=person_id,
        address=address,
        details={"role": role, "allowed_queues": list(queues)},
    )
    link = new_link(conn, person_id, actor, base_url=base_url) if base_url else None
    return Created(get_person(conn, person_id), link)


def update_person(
    conn: Connection,
    actor: AgentIdentity,
    person_id: int,
    changes: dict[str, Any],
    *,
    address: str | None,
) -> Person:
    """Any of display_name, role, allowed_queues, is_active. A change of role or queues, or a
    deactivation, ends the person's sessions at once."""
    person = get_person(conn, person_id, lock=True)
    _require_may_manage(actor, person.role, "change")
    sets: dict[str, Any] = {}
    if "display_name" in changes:
        name = str(changes["display_name"] or "").strip()
        if not name:
            raise InvalidInput("display_name cannot be empty", ["body", "display_name"])
        sets["display_name"] = name
    if "role" in changes and changes["role"] != person.role:
        role = changes["role"]
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}", ["body", "role"])
        _require_may_manage(actor, role, "give the role of")
        sets["role"] = role
    if "allowed_queues" in changes:
        queues = _check_queues(changes["allowed_queues"] or [])
        if queues != person.allowed_queues:
            sets["allowed_queues"] = list(queues)
    if "is_active" in changes and bool(changes["is_active"]) != person.is_active:
        sets["is_active"] = bool(changes["is_active"])
    if not sets:
        return person
    if person.role == "admin" and (
        sets.get("role", "admin") != "admin" or not sets.get("is_active", True)
    ):
        _require_another_admin(conn, person_id)
    assignments = ", ".join(f"{column} = :{column}" for column in sets)
    deactivated = (
        ", deactivated_at = CASE WHEN :is_active THEN NULL ELSE now() END"
        if "is_active" in sets
        else ""
    )
    conn.execute(
        text(f"UPDATE agents SET {assignments}{deactivated}, updated_at = now() WHERE id = :id"),
        {**sets, "id": person_id},
    )
    audit.record(
        conn,
        "person_changed",
        actor=actor.id,
        subject=person_id,
        address=address,
        details={
            name: {"from": _plain(getattr(person, name)), "to": _plain(value)}
            for name, value in sets.items()
        },
    )
    if {"role", "allowed_queues", "is_active"} & sets.keys():
        end_sessions(conn, person_id, "person_changed")
    return get_person(conn, person_id)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple | list) else value


def _require_another_admin(conn: Connection, person_id: int) -> None:
    others = conn.execute(
        text("SELECT count(*) FROM agents WHERE role = 'admin' AND is_active AND id <> :id"),
        {"id": person_id},
    ).scalar_one()
    if not others:
        raise Conflict("this is the last active admin: give another person the role first")


def new_link(
    conn: Connection, person_id: int, actor: AgentIdentity | None, *, base_url: str
) -> str:
    """A one-time set-password link, valid 72 hours; any earlier unused link of the person
    stops working. Shown once: only its hash is kept."""
    token = new_token(Kind.LINK)
    conn.execute(
        text("UPDATE password_links SET used_at = now() WHERE agent_id = :id AND used_at IS NULL"),
        {"id": person_id},
    )
    conn.execute(
        text(
            "INSERT INTO password_links (agent_id, token_hash, created_by, expires_at)"
            " VALUES (:id, :hash, :by, now() + make_interval(hours => :hours))"
        ),
        {
            "id": person_id,
            "hash": hash_token(token),
            "by": actor.id if actor else None,
            "hours": int(LINK_VALID.total_seconds() // 3600),
        },
    )
    return f"{base_url}/auth/set-password?token={token}"


def reset_password(
    conn: Connection,
    actor: AgentIdentity | None,
    person_id: int,
    *,
    address: str | None,
    base_url: str,
) -> str:
    """A new one-time link; the person's password is cleared and their sessions end."""
    person = get_person(conn, person_id, lock=True)
    if actor is not None:
        _require_may_manage(actor, person.role, "reset the password of")
    conn.execute(
        text("UPDATE agents SET password_hash = NULL, updated_at = now() WHERE id = :id"),
        {"id": person_id},
    )
    end_sessions(conn, person_id, "password_reset")
    audit.record(
        conn,
        "password_reset",
        actor=actor.id if actor else None,
        subject=person_id,
        address=address,
    )
    return new_link(conn, person_id, actor, base_url=base_url)


def sign_out_person(
    conn: Connection, actor: AgentIdentity, person_id: int, *, address: str | None
) -> int:
    person = get_person(conn, person_id)
    if actor.id != person_id:
        _require_may_manage(actor, person.role, "sign out")
    ended = end_sessions(conn, person_id, "signed_out_by_supervisor")
    audit.record(
        conn,
        "sessions_ended",
        actor=actor.id,
        subject=person_id,
        address=address,
        details={"sessions": ended},
    )
    return ended


def end_sessions(conn: Connection, person_id: int, reason: str) -> int:
    return int(
        conn.execute(
            text(
                "UPDATE sessions SET ended_at = now(), end_reason = :reason"
                " WHERE agent_id = :id AND ended_at IS NULL"
            ),
            {"id": person_id, "reason": reason},
        ).rowcount
    )


# -- machines and the command line: named people with an API token ---------------------------------


def create_agent(conn: Connection, name: str, role: str = "agent") -> str:
    """A person known by a name alone (``callqueue agents create``), with an API token; returns
    the token, shown once."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    try:
        with conn.begin_nested():
            person_id = conn.execute(
                text(
                    "INSERT INTO agents (name, display_name, role) VALUES (:n, :n, :r) RETURNING id"
                ),
                {"n": name, "r": role},
            ).scalar_one()
    except IntegrityError:
        raise Conflict("an agent with that name already exists") from None
    token = new_token(Kind.API)
    conn.execute(
        text("INSERT INTO api_tokens (agent_id, name, token_hash) VALUES (:id, :n, :h)"),
        {"id": person_id, "n": name, "h": hash_token(token)},
    )
    audit.record(
        conn,
        "person_created",
        actor=None,
        subject=person_id,
        address=None,
        details={"role": role, "token": name},
    )
    return token


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
    """``callqueue agents deactivate NAME`` (or an email): the person and their sessions."""
    row = conn.execute(
        text(
            "UPDATE agents SET is_active = false, deactivated_at = coalesce(deactivated_at, now()),"
            " updated_at = now() WHERE name = :n OR lower(email) = lower(:n) RETURNING id"
        ),
        {"n": name},
    ).one_or_none()
    if row is None:
        raise NotFound("no agent has that name")
    end_sessions(conn, row.id, "deactivated")
    audit.record(
        conn,
        "person_changed",
        actor=None,
        subject=row.id,
        address=None,
        details={"is_active": {"from": True, "to": False}},
    )
