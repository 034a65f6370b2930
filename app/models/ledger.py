"""The ledger (SPEC 2.1): every hand-out of a user to an agent, with its lease and outcome."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.rules import HASH_CHECK
from app.models.types import TZDateTime, created_at_column, updated_at_column


class Assignment(Base):
    """The ledger: every hand-out of a user to an agent, with its lease and how it ended."""

    __tablename__ = "assignments"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    user_id: Mapped[int] = mapped_column(BigInteger)
    queue_type: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    # No foreign key: a refresh drops finished entries, and the ledger outlives them.
    queue_entry_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    claim_id: Mapped[int | None] = mapped_column(BigInteger)
    priority_score: Mapped[int]
    queue_position: Mapped[int | None]
    queue_reason: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=text("'active'"))
    assigned_at: Mapped[datetime] = mapped_column(TZDateTime, server_default=text("now()"))
    lease_expires_at: Mapped[datetime] = mapped_column(TZDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    outcome: Mapped[str | None] = mapped_column(Text)
    callback_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    notes: Mapped[str | None] = mapped_column(Text)
    release_reason: Mapped[str | None] = mapped_column(Text)
    # Queue-specific details frozen at hand-out (claim, signature or requirement figures).
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    # Time from the next-user request to this hand-out, for the supervisors' latency figures.
    claim_ms: Mapped[int | None]
    # Source 'callback': the callback served, and when it was due at this hand-out.
    callback_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    callback_due_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    # The keyed hash (app.rules.suppression) of the number handed to the agent: a do_not_contact
    # outcome suppresses exactly this number, whatever the replica says later. None when the
    # number could not be parsed.
    phone_hash: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    __table_args__ = (
        CheckConstraint("status IN ('active', 'completed', 'released', 'expired')", name="status"),
        CheckConstraint("source IN ('queue', 'direct', 'callback')", name="source"),
        CheckConstraint(
            "(source = 'callback') = (callback_id IS NOT NULL)", name="callback_source"
        ),
        CheckConstraint(HASH_CHECK, name="phone_hash"),
        # The database, not the code, guarantees one live hand-out per user and per agent.
        Index(
            "uq_assignments_active_user",
            "user_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        Index(
            "uq_assignments_active_agent",
            "agent_id",
            unique=True,
            postgresql_where=text("status = 'active'"),
        ),
        Index(
            "ix_assignments_lease", "lease_expires_at", postgresql_where=text("status = 'active'")
        ),
        Index("ix_assignments_assigned_at", "assigned_at"),
        Index("ix_assignments_agent_id_assigned_at", "agent_id", "assigned_at"),
        Index("ix_assignments_user_id_assigned_at", "user_id", "assigned_at"),
        # Retention's notes pass reads in this order, going on from where it stopped.
        Index("ix_assignments_finished_at_id", "finished_at", "id"),
        # Attempt caps (SPEC 7.3): a user's completed attempts in the last 24 hours and 7 days,
        # counted for every population candidate and at each claim. Partial, so hand-outs
        # (inserted active) never touch it; only a completion adds an entry.
        Index(
            "ix_assignments_completed_user_id_finished_at",
            "user_id",
            "finished_at",
            postgresql_where=text("status = 'completed'"),
        ),
    )
