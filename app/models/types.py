from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, func
from sqlalchemy.orm import mapped_column

TZDateTime = DateTime(timezone=True)


def created_at_column() -> Any:
    return mapped_column(TZDateTime, server_default=func.now())


def updated_at_column() -> Any:
    return mapped_column(TZDateTime, server_default=func.now(), onupdate=func.now())


__all__ = ["TZDateTime", "created_at_column", "datetime", "updated_at_column"]
