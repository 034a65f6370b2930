"""Request and response shapes of lead intake (SPEC 7.1): the scores upsert and discovery."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from app.intake.scores import MAX_ROWS, MAX_USER_ID
from app.rules.outcomes import MAX_SCORE, MIN_SCORE

_INT4 = {"type": "integer", "minimum": -(2**31), "maximum": 2**31 - 1}

# A row is checked by the service, one by one, so that a bad row is a row error and never fails
# the others: the body's schema takes any object per row, and documents what a good one is.
ScoreRowIn = Annotated[
    dict[str, Any],
    WithJsonSchema(
        {
            "type": "object",
            "title": "ScoreRow",
            "description": "One lead's scores. A row breaking these rules is reported in"
            " `errors` with its index; the other rows are applied.",
            "properties": {
                "user_id": {"type": "integer", "minimum": 1, "maximum": MAX_USER_ID},
                "current_score": {"type": "integer", "minimum": MIN_SCORE, "maximum": MAX_SCORE},
                "base_score": _INT4,
                "outcome_penalty_score": _INT4,
                "time_penalty_score": _INT4,
            },
            "required": ["user_id", "current_score"],
            "additionalProperties": False,
        }
    ),
]


class ScoresIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    scores: list[ScoreRowIn] = Field(min_length=1, max_length=MAX_ROWS)


class RowErrorOut(BaseModel):
    index: int
    user_id: int | None
    error: str


class ScoresOut(BaseModel):
    created: int
    updated: int
    unchanged: int
    errors: list[RowErrorOut]


class DiscoveryReportOut(BaseModel):
    success: bool
    run_id: str
    scanned_users: int
    scanned_requirements: int
    created: int
    reclassified: int
    watermark: datetime | None
    duration_ms: int
    error: str | None


class DiscoveryRunOut(BaseModel):
    run_id: str
    trigger: str
    status: Literal["running", "succeeded", "failed"]
    full_walk: bool
    resumed: bool
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    scanned_users: int
    scanned_claims: int
    scanned_requirements: int
    created: int
    reclassified: int
    watermark: datetime | None
    error: str | None


class DiscoveryRunPage(BaseModel):
    items: list[DiscoveryRunOut]
    limit: int
    offset: int
    total: int
