from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Identity, Index, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column


class EntryInvalidation(Base):
    """Every entry (or direct-mode lead) skipped at claim time, and why. Refreshes drop invalid
    entries from the queue tables; this keeps the record for statistics and audits."""

    __tablename__ = "entry_invalidations"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    queue_type: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    entry_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    user_id: Mapped[int] = mapped_column(BigInteger)
    reason: Mapped[str] = mapped_column(Text)
    agent_id: Mapped[int | None]
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("ix_entry_invalidations_created_at", "created_at"),
        # Erasure and access requests find a person's rows (SPEC 8.3).
        Index("ix_entry_invalidations_user_id", "user_id"),
    )


class SchedulerTick(Base):
    """One row per job and tick: the process that inserts it runs the job, the others skip it."""

    __tablename__ = "scheduler_ticks"

    job: Mapped[str] = mapped_column(Text, primary_key=True)
    tick: Mapped[datetime] = mapped_column(TZDateTime, primary_key=True)
    owner: Mapped[str] = mapped_column(Text)
    started_at: Mapped[datetime] = created_at_column()
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    result: Mapped[str | None] = mapped_column(Text)
