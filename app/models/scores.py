from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, Index, String, Text, text
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column, updated_at_column


class UserCallScore(Base):
    """One row per lead. Upstream owns the scores; the service changes them only relatively."""

    __tablename__ = "user_call_scores"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[int] = mapped_column(BigInteger, unique=True)
    current_score: Mapped[int] = mapped_column(server_default=text("0"))
    next_call_after: Mapped[datetime | None] = mapped_column(TZDateTime)
    last_call_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    total_attempts: Mapped[int] = mapped_column(server_default=text("0"))
    successful_calls: Mapped[int] = mapped_column(server_default=text("0"))
    last_outcome: Mapped[str | None] = mapped_column(Text)
    base_score: Mapped[int] = mapped_column(server_default=text("0"))
    outcome_penalty_score: Mapped[int] = mapped_column(server_default=text("0"))
    time_penalty_score: Mapped[int] = mapped_column(server_default=text("0"))
    is_active: Mapped[bool] = mapped_column(server_default=text("true"))
    current_queue_type: Mapped[str | None] = mapped_column(String(32))
    last_reset_date: Mapped[datetime | None] = mapped_column(TZDateTime)
    last_queue_check: Mapped[datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    __table_args__ = (
        CheckConstraint(
            "current_queue_type IN ('unsigned_users', 'outstanding_requests')",
            name="queue_type",
        ),
        # The population walk: WHERE current_queue_type = Q AND is_active
        # ORDER BY current_score, created_at DESC, user_id -- read straight off this index.
        Index(
            "ix_user_call_scores_population",
            "current_queue_type",
            "current_score",
            text("created_at DESC"),
            "user_id",
            postgresql_where=text("is_active"),
        ),
        # The re-check of leads with no queue type: oldest check first.
        Index(
            "ix_user_call_scores_recheck",
            text("last_queue_check ASC NULLS FIRST"),
            "user_id",
            postgresql_where=text("is_active AND current_queue_type IS NULL"),
        ),
    )
