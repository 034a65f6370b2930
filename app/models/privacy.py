"""Personal data (SPEC 8.3): who was erased, what the compliance report keeps of their
callbacks, the daily compliance figures kept for days whose ledger rows are gone, and the audit
of erasures and access requests."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Date, ForeignKey, Identity, Index, Text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column


class ErasedUser(Base):
    """A tombstone: this user's data was erased, and discovery, the scores API and the CSV import
    refuse to bring them back (error ``Erased``)."""

    __tablename__ = "erased_users"

    user_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    erased_at: Mapped[datetime] = created_at_column()
    # The admin who erased them (None: the operator at the command line).
    erased_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))


class ErasedCallback(Base):
    """What the compliance report counts of an erased person's callback, and nothing else: its
    times and how it stood. No user id."""

    __tablename__ = "erased_callbacks"

    id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(TZDateTime)
    due_at: Mapped[datetime] = mapped_column(TZDateTime)
    first_handed_out_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    # As the report reads it: 'scheduled' (still counted overdue), 'completed', 'cancelled',
    # 'assigned', or 'erased' (open, not yet overdue when erased: never counted overdue).
    status: Mapped[str] = mapped_column(Text)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)

    __table_args__ = (
        CheckConstraint(
            "status IN ('scheduled', 'assigned', 'completed', 'cancelled', 'erased')",
            name="status",
        ),
        Index("ix_erased_callbacks_due_at", "due_at"),
        Index("ix_erased_callbacks_created_at", "created_at"),
    )


class ComplianceDay(Base):
    """One local day's compliance figures, kept once the day can no longer change (and before
    retention deletes the ledger rows they come from): the report reads a day's figures from
    here when it has a row."""

    __tablename__ = "compliance_days"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    # The calling rules' time zone the day was cut in.
    timezone: Mapped[str] = mapped_column(Text)
    figures: Mapped[dict[str, Any]] = mapped_column(JSONB)
    summarised_at: Mapped[datetime] = created_at_column()


class DataRequest(Base):
    """Audit of erasures and access requests: who, when, which user id, and for an erasure the
    counts per table; never personal data."""

    __tablename__ = "data_requests"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    action: Mapped[str] = mapped_column(Text)
    user_id: Mapped[int] = mapped_column(BigInteger)
    agent_id: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    at: Mapped[datetime] = created_at_column()
    removed: Mapped[dict[str, Any] | None] = mapped_column(JSONB)

    __table_args__ = (
        CheckConstraint("action IN ('erase', 'export')", name="action"),
        Index("ix_data_requests_user_id", "user_id"),
    )


class RetentionState(Base):
    """How far retention's notes pass has cleared the ledger (finished_at, id): each run goes on
    from there instead of reading again what it cleared."""

    __tablename__ = "retention_state"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    through_at: Mapped[datetime] = mapped_column(TZDateTime)
    through_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
