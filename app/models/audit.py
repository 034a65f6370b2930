from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, Identity, Index, Text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import created_at_column


class QueueTransition(Base):
    """Every change of a lead's current_queue_type, written in the transaction that makes it."""

    __tablename__ = "queue_transitions"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    user_id: Mapped[int] = mapped_column(BigInteger)
    from_queue_type: Mapped[str | None] = mapped_column(Text)
    to_queue_type: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(Text)
    agent_id: Mapped[int | None]
    run_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        Index("ix_queue_transitions_user_id_created_at", "user_id", "created_at"),
        # Retention deletes the oldest first (SPEC 8.3).
        Index("ix_queue_transitions_created_at", "created_at"),
    )
