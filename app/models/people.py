"""People (SPEC 8.2): agents, supervisors, admins and scorers; their API tokens, sessions and
set-password links; failed sign-ins, OpenID Connect sign-ins under way, and the audit."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column, updated_at_column


class Agent(Base):
    """A person (an agent, a supervisor, an admin) or a machine (a scorer) using the service:
    SPEC 8.2's people. They sign in with a password or the company's identity provider
    (sessions) or present an API token; only hashes of secrets are stored."""

    __tablename__ = "agents"

    id: Mapped[int] = mapped_column(Identity(always=True), primary_key=True)
    # A handle, unique: the name given to `callqueue agents create`, or the person's email.
    name: Mapped[str] = mapped_column(Text, unique=True)
    role: Mapped[str] = mapped_column(Text, server_default=text("'agent'"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    created_at: Mapped[datetime] = created_at_column()
    deactivated_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    # Unique whatever its case (uq_agents_email on lower(email)).
    email: Mapped[str | None] = mapped_column(Text)
    display_name: Mapped[str] = mapped_column(Text)
    allowed_queues: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{unsigned_users,outstanding_requests}'")
    )
    # argon2id (pwdlib), or none: no password sign-in for this person.
    password_hash: Mapped[str | None] = mapped_column(Text)
    # The identity provider's subject, recorded at the first sign-in through it.
    oidc_subject: Mapped[str | None] = mapped_column(Text, unique=True)
    updated_at: Mapped[datetime] = updated_at_column()

    __table_args__ = (
        CheckConstraint("role IN ('agent', 'supervisor', 'admin', 'scorer')", name="role"),
        CheckConstraint(
            "allowed_queues <@ ARRAY['unsigned_users', 'outstanding_requests']::text[]",
            name="allowed_queues",
        ),
        Index("uq_agents_email", text("lower(email)"), unique=True),
    )


class ApiToken(Base):
    """A bearer token for a machine or a script (SPEC 8.2): named, owned, optionally expiring,
    revocable; only its SHA-256 is stored (256 random bits: nothing to brute-force)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    name: Mapped[str] = mapped_column(Text)
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = created_at_column()
    created_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    expires_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(TZDateTime)

    __table_args__ = (Index("ix_api_tokens_agent_id", "agent_id"),)


class Session(Base):
    """A signed-in browser (SPEC 8.2): the cookie's token, hashed; idle and absolute expiry in
    the database's clock; ended at once by sign-out or a change to the person."""

    __tablename__ = "sessions"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = created_at_column()
    last_seen_at: Mapped[datetime] = mapped_column(TZDateTime, server_default=text("now()"))
    expires_at: Mapped[datetime] = mapped_column(TZDateTime)
    user_agent: Mapped[str | None] = mapped_column(Text)
    method: Mapped[str] = mapped_column(Text)
    ended_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    end_reason: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("method IN ('password', 'oidc')", name="method"),
        Index("ix_sessions_agent_id_live", "agent_id", postgresql_where=text("ended_at IS NULL")),
    )


class PasswordLink(Base):
    """A one-time set-password link (SPEC 8.2): valid 72 hours, used once; only its hash kept."""

    __tablename__ = "password_links"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    token_hash: Mapped[str] = mapped_column(Text, unique=True)
    created_at: Mapped[datetime] = created_at_column()
    created_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    expires_at: Mapped[datetime] = mapped_column(TZDateTime)
    used_at: Mapped[datetime | None] = mapped_column(TZDateTime)


class SignInFailure(Base):
    """A failed password sign-in, by the email tried (lower case): five within 15 minutes lock
    that email for 15 minutes, whatever the source address (SPEC 8.2)."""

    __tablename__ = "sign_in_failures"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    email: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[datetime] = mapped_column(TZDateTime, server_default=text("now()"))

    __table_args__ = (Index("ix_sign_in_failures_email_failed_at", "email", "failed_at"),)


class OidcLogin(Base):
    """An OpenID Connect sign-in under way: Authlib's state data (PKCE verifier, nonce,
    redirect URI), keyed by its state, bound to the browser that started it (the hash of its
    state cookie), deleted when the callback uses it (a replayed callback finds nothing)."""

    __tablename__ = "oidc_logins"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    browser_hash: Mapped[str] = mapped_column(Text)
    data: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[datetime] = mapped_column(TZDateTime)


class AuthEvent(Base):
    """Audit of sign-in and people (SPEC 8.2): every change to a person or a token, every
    sign-in, failed sign-in and sign-out: who, when, from which address; never a password or a
    token."""

    __tablename__ = "auth_events"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    at: Mapped[datetime] = mapped_column(TZDateTime, server_default=text("now()"))
    action: Mapped[str] = mapped_column(Text)
    # Who did it (none: the person signing in, or a command run by the operator).
    actor_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    # Whom it was about.
    subject_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    address: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (Index("ix_auth_events_at", "at"),)
