from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Identity, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base
from app.models.types import TZDateTime, created_at_column


class FeatureFlag(Base):
    """A run-time override of a flag's environment default; every process reads it per request."""

    __tablename__ = "feature_flags"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    updated_at: Mapped[datetime] = mapped_column(TZDateTime)


class FeatureFlagChange(Base):
    """Audit of every flag change: who, when, old and new value."""

    __tablename__ = "feature_flag_changes"

    id: Mapped[int] = mapped_column(BigInteger, Identity(always=True), primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    old_value: Mapped[str] = mapped_column(Text)
    new_value: Mapped[str] = mapped_column(Text)
    changed_by: Mapped[int | None] = mapped_column(ForeignKey("agents.id"))
    changed_at: Mapped[datetime] = created_at_column()
