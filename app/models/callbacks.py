from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Identity, Index, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column, updated_at_column

# A callback is open while it may still be served: waiting for its time, or with an agent.
OPEN = "status IN ('scheduled', 'assigned')"


class Callback(Base):
    """A call promised to a person (SPEC 7.2): booked by a completion with ``callback_at``,
    served before any queue entry once due, first to the agent who booked it."""

    __tablename__ = "callbacks"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[int] = mapped_column(BigInteger)
    # The queue it is served from: the user's type when booked, moved when the user moves.
    queue_type: Mapped[str] = mapped_column(Text)
    due_at: Mapped[datetime] = mapped_column(TZDateTime)
    # The agent who booked it (or a supervisor's reassignment): served first to them.
    owner_agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    status: Mapped[str] = mapped_column(Text, server_default=text("'scheduled'"))
    # The completion that booked it, and the hand-out serving it (the latest one).
    booked_by_assignment_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    assignment_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    # The first hand-out: it decides whether the promise was kept on time or late.
    first_handed_out_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    cancel_reason: Mapped[str | None] = mapped_column(Text)
    # The due time a ``callback.overdue`` event was written for (SPEC 8.4): once per due time,
    # again if a supervisor moves it and the new time passes too.
    overdue_reported_for: Mapped[datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    __table_args__ = (
        CheckConstraint(
            "status IN ('scheduled', 'assigned', 'completed', 'cancelled')", name="status"
        ),
        CheckConstraint(
            "queue_type IN ('unsigned_users', 'outstanding_requests')", name="queue_type"
        ),
        # One open callback per person, the database's guarantee.
        Index("uq_callbacks_open_user", "user_id", unique=True, postgresql_where=text(OPEN)),
        # Serving order: the agent's own due callbacks, then anyone's, oldest first.
        Index(
            "ix_callbacks_scheduled_owner_due",
            "owner_agent_id",
            "due_at",
            postgresql_where=text("status = 'scheduled'"),
        ),
        Index(
            "ix_callbacks_scheduled_queue_due",
            "queue_type",
            "due_at",
            "id",
            postgresql_where=text("status = 'scheduled'"),
        ),
        Index("ix_callbacks_due_at", "due_at"),
    )


class CallbackChange(Base):
    """Audit of supervisors' changes to callbacks: cancel and reassign."""

    __tablename__ = "callback_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    callback_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("callbacks.id", ondelete="CASCADE")
    )
    action: Mapped[str] = mapped_column(Text)
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.id"))
    old_owner_agent_id: Mapped[int | None]
    new_owner_agent_id: Mapped[int | None]
    reason: Mapped[str | None] = mapped_column(Text)
    changed_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("action IN ('cancel', 'reassign')", name="action"),
        Index("ix_callback_changes_callback_id", "callback_id"),
    )
