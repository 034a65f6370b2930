from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column


class PopulationRun(Base):
    """One trigger of the population (cron, CLI, scheduler, replenish), dry runs included."""

    __tablename__ = "population_runs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    trigger: Mapped[str] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(server_default=text("false"))
    queue_filter: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'running'"))
    started_at: Mapped[datetime] = mapped_column(TZDateTime, server_default=text("now()"))
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    duration_ms: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        Index("ix_population_runs_started_at", "started_at"),
    )


class PopulationRunQueue(Base):
    """The figures of one queue within one run; health and the replenish interval read these."""

    __tablename__ = "population_run_queues"

    run_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("population_runs.id", ondelete="CASCADE"), primary_key=True
    )
    queue_type: Mapped[str] = mapped_column(Text, primary_key=True)
    status: Mapped[str] = mapped_column(Text)
    dry_run: Mapped[bool] = mapped_column(server_default=text("false"))
    eligible: Mapped[int] = mapped_column(server_default=text("0"))
    invalid: Mapped[int] = mapped_column(server_default=text("0"))
    populated: Mapped[int] = mapped_column(server_default=text("0"))
    removed: Mapped[int] = mapped_column(server_default=text("0"))
    kept_assigned: Mapped[int] = mapped_column(server_default=text("0"))
    duration_ms: Mapped[int] = mapped_column(server_default=text("0"))
    error: Mapped[str | None] = mapped_column(Text)
    started_at: Mapped[datetime] = mapped_column(TZDateTime)
    finished_at: Mapped[datetime] = mapped_column(TZDateTime)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("status IN ('succeeded', 'failed', 'skipped')", name="status"),
        Index("ix_population_run_queues_queue_type_finished_at", "queue_type", "finished_at"),
    )
