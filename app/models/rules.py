from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Date,
    ForeignKey,
    Identity,
    Index,
    SmallInteger,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column

# A stored hash is 64 lowercase hex digits and nothing else: no raw number can ever be kept here.
HASH_CHECK = "phone_hash ~ '^[0-9a-f]{64}$'"


class CallingRulesOverride(Base):
    """The supervisors' run-time change of the calling rules: one row at most; a null column
    keeps the environment's default. Every process reads it per request."""

    __tablename__ = "calling_rules"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    timezone: Mapped[str | None] = mapped_column(Text)
    hours: Mapped[str | None] = mapped_column(Text)
    holidays: Mapped[list[date] | None] = mapped_column(ARRAY(Date))
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    updated_at: Mapped[datetime] = mapped_column(TZDateTime)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class CallingRulesChange(Base):
    """Audit and history of the calling rules: who, when, and the whole rules before and after,
    so the compliance report judges each hand-out by the rules of its moment."""

    __tablename__ = "calling_rules_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    old_rules: Mapped[dict[str, Any]] = mapped_column(JSONB)
    new_rules: Mapped[dict[str, Any]] = mapped_column(JSONB)
    changed_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    changed_at: Mapped[datetime] = created_at_column()


class SuppressedNumber(Base):
    """The do-not-call list: HMAC-SHA256 (SUPPRESSION_KEY) of each number in E.164, never the
    number itself. ``source``: api, import, do_not_contact, demo."""

    __tablename__ = "suppressed_numbers"

    phone_hash: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(Text)
    added_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    added_at: Mapped[datetime] = created_at_column()

    __table_args__ = (CheckConstraint(HASH_CHECK, name="phone_hash"),)


class SuppressionChange(Base):
    """Audit of the list: every number added or removed, by whom (an agent, or none for the
    import command and the demo), from where, and when."""

    __tablename__ = "suppression_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    action: Mapped[str] = mapped_column(Text)
    phone_hash: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    changed_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("action IN ('add', 'remove')", name="action"),
        CheckConstraint(HASH_CHECK, name="phone_hash"),
        Index("ix_suppression_changes_phone_hash", "phone_hash"),
    )


class SuppressionKeyCheck(Base):
    """A fingerprint of the key the list's hashes were made with (an HMAC of a fixed label, which
    says nothing about the key). A process holding another SUPPRESSION_KEY would compute hashes
    that never match, and call suppressed numbers: it is refused instead."""

    __tablename__ = "suppression_key_check"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("1"))
    fingerprint: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)
