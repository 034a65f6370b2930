from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, SmallInteger, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, updated_at_column


class DiscoveryState(Base):
    """Where discovery stands on the replica: one row.

    ``watermark``: every replica row created before it (by the replica's ``created_at``) that the
    replica held when a pass read it has been handled; the next pass reads from the watermark
    minus ``DISCOVERY_LOOKBACK_MINUTES``. The ``pass_*`` columns describe a pass in progress
    (``pass_phase`` null: none), committed with each batch it covers, so a run that died resumes
    after its last committed batch instead of starting over.
    """

    __tablename__ = "discovery_state"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, server_default=text("1"))
    watermark: Mapped[datetime | None] = mapped_column(TZDateTime)
    # The pass in progress: its lower bound (null: a full walk of the replica), when it began
    # (database clock), which table it is walking, the last id done there, the newest
    # created_at seen so far, and the highest user id at its start (for progress in the logs).
    pass_since: Mapped[datetime | None] = mapped_column(TZDateTime)
    pass_started_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    pass_phase: Mapped[str | None] = mapped_column(Text)
    pass_after_id: Mapped[int | None] = mapped_column(BigInteger)
    pass_max_seen: Mapped[datetime | None] = mapped_column(TZDateTime)
    pass_users_max_id: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = updated_at_column()

    __table_args__ = (
        CheckConstraint("id = 1", name="single_row"),
        CheckConstraint("pass_phase IN ('users', 'claims', 'requirements')", name="pass_phase"),
    )


class DiscoveryRun(Base):
    """One discovery run (cron, CLI, scheduler) and its figures, for operators."""

    __tablename__ = "discovery_runs"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    trigger: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'running'"))
    # A walk of the whole replica (no watermark yet), and whether it went on from a pass that
    # an earlier run left unfinished.
    full_walk: Mapped[bool] = mapped_column(server_default=text("false"))
    resumed: Mapped[bool] = mapped_column(server_default=text("false"))
    started_at: Mapped[datetime] = mapped_column(TZDateTime, server_default=text("now()"))
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    duration_ms: Mapped[int | None]
    scanned_users: Mapped[int] = mapped_column(server_default=text("0"))
    scanned_claims: Mapped[int] = mapped_column(server_default=text("0"))
    scanned_requirements: Mapped[int] = mapped_column(server_default=text("0"))
    created: Mapped[int] = mapped_column(server_default=text("0"))
    reclassified: Mapped[int] = mapped_column(server_default=text("0"))
    watermark: Mapped[datetime | None] = mapped_column(TZDateTime)
    error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint("status IN ('running', 'succeeded', 'failed')", name="status"),
        Index("ix_discovery_runs_started_at", "started_at"),
    )
