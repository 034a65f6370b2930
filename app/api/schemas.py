"""Response shapes, so the OpenAPI document says what the routes really answer."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel


class QueueFigures(BaseModel):
    status: Literal["succeeded", "failed", "skipped"]
    eligible: int
    invalid: int
    populated: int
    removed: int
    kept_assigned: int
    duration_ms: int
    error: str | None


class PopulationReport(BaseModel):
    success: bool
    run_id: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    next_run_at: datetime
    queues: dict[Literal["unsigned_users", "outstanding_requests"], QueueFigures]


class QueueHealth(BaseModel):
    pending: int
    assigned: int
    total: int
    oldest_pending_at: datetime | None
    last_populated_at: datetime | None


class HealthReport(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    checked_at: datetime
    issues: list[str]
    database: Literal["ok", "error"]
    replica: Literal["ok", "error"]
    flags: dict[str, Any]
    queues: dict[str, QueueHealth | None]
    last_run: dict[str, Any] | None


class Readiness(BaseModel):
    status: Literal["ready", "not_ready"]
    database: Literal["ok", "error"]
    schema_: Literal["current", "behind", "unknown"]
    replica: Literal["ok", "error"]

    model_config = {"populate_by_name": True}
