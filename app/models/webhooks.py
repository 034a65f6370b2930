"""Events to the rest of the business (SPEC 8.4): the endpoints admins register, the outbox the
changes write their events to, and each event's delivery to each endpoint with its attempts."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Identity,
    Index,
    Integer,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column, updated_at_column

NEW_ID = text("gen_random_uuid()")


class WebhookEndpoint(Base):
    """A receiver: its URL, the event types it subscribes to, and its signing secret (a rotated
    one signs beside the new one until ``previous_secret_until``). ``next_seq`` numbers its
    deliveries in the order events are dispatched."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=NEW_ID
    )
    url: Mapped[str] = mapped_column(Text)
    event_types: Mapped[list[str]] = mapped_column(ARRAY(Text))
    description: Mapped[str] = mapped_column(Text, server_default=text("''"))
    enabled: Mapped[bool] = mapped_column(server_default=text("true"))
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    secret: Mapped[str] = mapped_column(Text)
    previous_secret: Mapped[str | None] = mapped_column(Text)
    previous_secret_until: Mapped[datetime | None] = mapped_column(TZDateTime)
    next_seq: Mapped[int] = mapped_column(BigInteger, server_default=text("1"))
    # Since when every attempt has failed (None: the last one succeeded, or none yet).
    failing_since: Mapped[datetime | None] = mapped_column(TZDateTime)
    created_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    created_at: Mapped[datetime] = created_at_column()
    updated_at: Mapped[datetime] = updated_at_column()

    __table_args__ = (
        CheckConstraint("cardinality(event_types) >= 1", name="event_types"),
        CheckConstraint("enabled OR disabled_reason IS NOT NULL", name="disabled_reason"),
    )


class WebhookEvent(Base):
    """The outbox: one row per event, written by the change it reports in its own transaction
    (the triggers of migrations/sql/0013_webhooks/); ``position`` is the order they are
    dispatched to the endpoints in."""

    __tablename__ = "webhook_events"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=NEW_ID
    )
    position: Mapped[int] = mapped_column(BigInteger, Identity(always=True), unique=True)
    type: Mapped[str] = mapped_column(Text)
    occurred_at: Mapped[datetime] = mapped_column(
        TZDateTime, server_default=text("clock_timestamp()")
    )
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    dispatched: Mapped[bool] = mapped_column(server_default=text("false"))
    # Sent only to this endpoint (a test event); None: to every subscribed endpoint.
    endpoint_id: Mapped[uuid.UUID | None] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    # The person the event is about (the payload's ``user_id``), for access requests.
    user_id: Mapped[int | None] = mapped_column(BigInteger)

    __table_args__ = (
        Index(
            "ix_webhook_events_undispatched",
            "position",
            postgresql_where=text("NOT dispatched"),
        ),
        Index("ix_webhook_events_occurred_at", "occurred_at"),
        Index("ix_webhook_events_user_id", "user_id", postgresql_where=text("user_id IS NOT NULL")),
    )


class WebhookDelivery(Base):
    """One event to one endpoint: its number in the endpoint's sequence, whether it has been
    delivered, and when it is next tried. A sender leases it (``locked_until``) for one attempt."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=NEW_ID
    )
    event_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_events.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    seq: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(Text, server_default=text("'pending'"))
    # Attempts made in all, and in the current round (a redelivery starts a new round).
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    round_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    next_attempt_at: Mapped[datetime] = mapped_column(TZDateTime)
    locked_until: Mapped[datetime | None] = mapped_column(TZDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(TZDateTime)
    created_at: Mapped[datetime] = created_at_column()

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'delivered', 'failed')", name="status"),
        UniqueConstraint("endpoint_id", "seq"),
        UniqueConstraint("event_id", "endpoint_id"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
        ),
    )


class WebhookAttempt(Base):
    """The delivery log: every attempt, with what the receiver answered (never its body)."""

    __tablename__ = "webhook_attempts"

    id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), primary_key=True, server_default=NEW_ID
    )
    delivery_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_deliveries.id", ondelete="CASCADE")
    )
    endpoint_id: Mapped[uuid.UUID] = mapped_column(
        UUID(as_uuid=True), ForeignKey("webhook_endpoints.id", ondelete="CASCADE")
    )
    attempt: Mapped[int] = mapped_column(Integer)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[int] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    attempted_at: Mapped[datetime] = mapped_column(TZDateTime)

    __table_args__ = (
        Index("ix_webhook_attempts_endpoint_attempted_at", "endpoint_id", "attempted_at"),
        Index("ix_webhook_attempts_delivery_id", "delivery_id"),
    )
