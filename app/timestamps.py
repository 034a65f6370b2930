"""Timestamps as the API writes them and as the replica's drivers return them."""

from __future__ import annotations

from datetime import UTC, datetime


def iso(value: datetime | None) -> str | None:
    """ISO 8601 for the JSON bodies; None stays None."""
    return value.isoformat() if value is not None else None


def utc(value: datetime) -> datetime:
    """An aware UTC datetime. MySQL's DATETIME comes back naive; the platform stores UTC."""
    if value.tzinfo is UTC:  # the usual case: replica sessions run in UTC
        return value
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
