from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB, UUID
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column, updated_at_column

ENTRY_STATUSES = ("pending", "assigned", "completed", "skipped", "invalid")


class QueueEntry(Base):
    """Columns and indexes shared by both queue tables: one snapshot of one queue."""

    __abstract__ = True

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=text("gen_random_uuid()")
    )
    user_id: Mapped[int] = mapped_column(BigInteger)
    claim_id: Mapped[int | None] = mapped_column(BigInteger)
    priority_score: Mapped[int]
    queue_position: Mapped[int]
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    queue_reason: Mapped[str] = mapped_column(Text)
    available_from: Mapped[datetime] = mapped_column(TZDateTime)
    assigned_to_agent: Mapped[int | None]
    assigned_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    invalid_reason: Mapped[str | None] = mapped_column(Text)
    # Pending again after a hand-out (released with re-queue, or its lease lapsed): claims find
    # it below the queue's front (QueueFront).
    put_back: Mapped[bool] = mapped_column(server_default=text("false"))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    @declared_attr.directive
    @classmethod
    def __table_args__(cls) -> Any:
        name = cls.__tablename__
        statuses = ", ".join(f"'{s}'" for s in ENTRY_STATUSES)
        return (
            CheckConstraint(f"status IN ({statuses})", name="status"),
            # The claim reads the first pending entry in serving order; the partial index holds
            # only pending rows, so finished entries never slow it down.
            Index(
                f"ix_{name}_claim_order",
                "queue_position",
                "id",
                postgresql_where=text("status = 'pending'"),
            ),
            # The put-back entries claims may take, wherever they are in the serving order.
            Index(
                f"ix_{name}_put_back",
                "queue_position",
                "id",
                postgresql_where=text("status = 'pending' AND put_back"),
            ),
            # A user has at most one live entry per queue table.
            Index(
                f"uq_{name}_live_user",
                "user_id",
                unique=True,
                postgresql_where=text("status IN ('pending', 'assigned')"),
            ),
            # Refreshes and the lease sweep look entries up by status.
            Index(f"ix_{name}_status", "status"),
            {
                # Every refresh deletes and inserts a snapshot's worth of rows, and every claim
                # updates one: room for HOT updates, and vacuum soon after each refresh.
                "postgresql_with": {
                    "fillfactor": "80",
                    "autovacuum_vacuum_scale_factor": "0.02",
                    "autovacuum_vacuum_threshold": "1000",
                    "autovacuum_analyze_scale_factor": "0.05",
                }
            },
        )


class UnsignedUsersEntry(QueueEntry):
    __tablename__ = "unsigned_users_queue"

    signature_missing_since: Mapped[datetime | None] = mapped_column(TZDateTime)
    signature_type: Mapped[str | None] = mapped_column(Text)


class OutstandingRequestsEntry(QueueEntry):
    __tablename__ = "outstanding_requests_queue"

    requirement_types: Mapped[list[str]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    total_requirements: Mapped[int] = mapped_column(server_default=text("0"))
    pending_requirements: Mapped[int] = mapped_column(server_default=text("0"))
    completed_requirements: Mapped[int] = mapped_column(server_default=text("0"))
    oldest_requirement_date: Mapped[datetime | None] = mapped_column(TZDateTime)


class QueueFront(Base):
    """Where a queue's claims start looking (``cq_advance_front``): no entry before
    ``position`` is pending but those put back. Each server process moves it up every few
    seconds; a swap sets it back to 0 in its own transaction."""

    __tablename__ = "queue_fronts"

    queue_type: Mapped[str] = mapped_column(Text, primary_key=True)
    position: Mapped[int] = mapped_column(server_default=text("0"))
    updated_at: Mapped[datetime] = mapped_column(TZDateTime, server_default=text("now()"))

    __table_args__ = (
        CheckConstraint(
            "queue_type IN ('unsigned_users', 'outstanding_requests')", name="queue_type"
        ),
    )
