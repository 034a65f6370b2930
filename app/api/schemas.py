"""Response shapes, so the OpenAPI document says what the routes really answer."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    WithJsonSchema,
    model_validator,
)

from app.config import MigrationMode
from app.rules.outcomes import MAX_CALLBACK_AHEAD, RULES, Outcome

# RFC 3339 date-time, offset required: what ``format: date-time`` promises. Pydantic alone would
# also take a bare number (seconds since 1970: ``?until=0.5`` was 1970) and a few other shapes.
RFC3339 = r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
_RFC3339 = re.compile(RFC3339)


def _rfc3339_only(value: object) -> object:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError("must be an ISO 8601 date-time with an offset, e.g. 2026-12-01T10:00:00Z")
    return value


_DATE_TIME_SCHEMA = {"type": "string", "format": "date-time", "pattern": RFC3339}
IsoDateTime = Annotated[
    AwareDatetime, BeforeValidator(_rfc3339_only), WithJsonSchema(_DATE_TIME_SCHEMA)
]
# A query parameter is absent or a date-time: never "null".
IsoDateTimeQuery = Annotated[
    AwareDatetime | None, BeforeValidator(_rfc3339_only), WithJsonSchema(_DATE_TIME_SCHEMA)
]


class _Figures(BaseModel):
    """A population's figures for one queue (SPEC 4.1)."""

    eligible: int
    invalid: int
    populated: int
    removed: int
    kept_assigned: int
    duration_ms: int
    error: str | None


class QueueFigures(_Figures):
    status: Literal["succeeded", "failed", "skipped"]


class PopulationReport(BaseModel):
    success: bool
    run_id: str
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    next_run_at: datetime
    queues: dict[Literal["unsigned_users", "outstanding_requests"], QueueFigures]


class CallbackCounts(BaseModel):
    """Callbacks of one queue (SPEC 7.2), on the database's clock."""

    scheduled: int = Field(description="waiting for their time or an agent")
    due: int = Field(description="scheduled, and due now")
    overdue: int = Field(description="still scheduled CALLBACK_GRACE_MINUTES after due")
    assigned: int = Field(description="with an agent now")
    late: int = Field(
        description="first handed out more than CALLBACK_GRACE_MINUTES after due, within the"
        " statistics' window (the health report: the last 24 hours)"
    )


class QueueHealth(BaseModel):
    pending: int
    assigned: int
    total: int
    oldest_pending_at: datetime | None
    last_populated_at: datetime | None
    callbacks: CallbackCounts


class HealthReport(BaseModel):
    status: Literal["healthy", "degraded", "unhealthy"]
    checked_at: datetime
    issues: list[str]
    database: Literal["ok", "error"]
    replica: Literal["ok", "error"]
    flags: dict[str, Any]
    queues: dict[str, QueueHealth | None]
    last_run: dict[str, Any] | None


class Liveness(BaseModel):
    status: Literal["alive"]


class Readiness(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    status: Literal["ready", "not_ready"]
    database: Literal["ok", "error"]
    schema_: Literal["current", "behind", "unknown"] = Field(alias="schema")
    replica: Literal["ok", "error"]
    # Whether this process's SUPPRESSION_KEY is the do-not-call list's ("unset": no list key
    # recorded yet; "unknown": the database could not say).
    suppression_key: Literal["ok", "mismatch", "unset", "unknown"]


class ReplenishDecision(BaseModel):
    pending: int
    watermark: int
    seconds_since_last_population: int | None
    action: Literal["populate", "none"]
    reason: str


class QueueLevelCheck(BaseModel):
    queues: dict[Literal["unsigned_users", "outstanding_requests"], ReplenishDecision]
    run: PopulationReport | None


class LatencyMs(BaseModel):
    p50: float | None
    p95: float | None


class StatsWindow(BaseModel):
    claims: int
    completions: dict[str, int]
    releases: int
    lease_expiries: int
    invalid: dict[str, int]
    next_user_ms: LatencyMs


class LastPopulation(_Figures):
    run_id: str
    status: Literal["succeeded", "failed"]
    finished_at: datetime


class QueueStats(BaseModel):
    pending: int
    assigned: int
    oldest_pending_age_seconds: int | None
    longest_assignment_seconds: int | None
    last_population: LastPopulation | None
    window: StatsWindow
    callbacks: CallbackCounts


class StatsOut(BaseModel):
    generated_at: datetime
    window_minutes: int
    queues: dict[Literal["unsigned_users", "outstanding_requests"], QueueStats]


class EntryPage(BaseModel):
    """Entries of the current snapshot in serving order; each item has the queue table's columns
    (the shared ones and the queue's own details), never contact details."""

    items: list[dict[str, Any]]
    limit: int
    offset: int
    total: int


class RunOut(BaseModel):
    run_id: str
    trigger: str
    dry_run: bool
    queue: str | None
    status: Literal["running", "succeeded", "failed"]
    started_at: datetime
    finished_at: datetime | None
    duration_ms: int | None
    error: str | None
    queues: dict[str, dict[str, Any]]


class RunPage(BaseModel):
    items: list[RunOut]
    limit: int
    offset: int
    total: int


class ContactOut(BaseModel):
    first_name: str | None
    last_name: str | None
    phone_number: str | None
    email_address: str | None


class AssignmentOut(BaseModel):
    assignment_id: str
    status: Literal["active", "completed", "released", "expired"]
    queue_type: Literal["unsigned_users", "outstanding_requests"]
    source: Literal["queue", "direct", "callback"]
    queue_entry_id: str | None
    user_id: int
    claim_id: int | None
    priority_score: int
    queue_position: int | None
    queue_reason: str | None
    assigned_at: datetime
    lease_expires_at: datetime
    resumed: bool
    outcome: str | None
    # Source 'callback' (SPEC 7.2): the callback served and when it was due at this hand-out.
    callback_id: str | None
    callback_due_at: datetime | None
    user: ContactOut | None
    details: dict[str, Any]


class ScoreOut(BaseModel):
    current_score: int
    next_call_after: datetime | None
    is_active: bool
    current_queue_type: str | None


class BookedCallbackOut(BaseModel):
    id: str
    due_at: datetime


class CompletedOut(AssignmentOut):
    score: ScoreOut | None
    # The callback this completion booked (a callback_at with a person still in a queue).
    callback: BookedCallbackOut | None


# PostgreSQL text cannot hold NUL bytes: refuse them as invalid input, not a database error.
FreeText = Annotated[str, Field(pattern=r"^[^\x00]*$")]


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    requeue: StrictBool = True
    reason: FreeText | None = Field(
        None,
        max_length=500,
        description="kept on the ledger row; like notes, never logged or listed",
    )


CALLBACK_OUTCOMES = sorted(str(o) for o, rule in RULES.items() if rule.accepts_callback)
CALLBACK_RULE = (
    f"When to call back: only with the outcomes {', '.join(CALLBACK_OUTCOMES)} (with any other"
    f" outcome it must be null or absent); in the future and at most"
    f" {MAX_CALLBACK_AHEAD.days} days ahead by the database's clock. Breaking either rule is a 422."
)


def _callback_rule_schema(schema: dict[str, Any]) -> None:
    """The outcome rule in the document itself (JSON Schema if/then): with any other outcome,
    callback_at is null. The time window depends on the server's clock and stays prose."""
    schema["if"] = {
        "properties": {"outcome": {"not": {"enum": CALLBACK_OUTCOMES}}},
        "required": ["outcome"],
    }
    schema["then"] = {"properties": {"callback_at": {"type": "null"}}}


class CompleteIn(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra=_callback_rule_schema)

    outcome: Outcome
    callback_at: IsoDateTime | None = Field(None, description=CALLBACK_RULE)
    notes: FreeText | None = Field(None, max_length=2000, description="never logged or listed")


# A flag may be left out, never null: the document says boolean (or the mode's enum), and an
# explicit null is refused by _no_nulls below. (Pydantic would otherwise document "| None".)
_Bool = Annotated[StrictBool | None, WithJsonSchema({"type": "boolean"})]
_Mode = Annotated[
    MigrationMode | None,
    WithJsonSchema({"type": "string", "enum": [str(m) for m in MigrationMode]}),
]


class Patch(BaseModel):
    """A PATCH body: any subset of its fields, by name; null is not a value (a field left out
    is left as it is). ``changes()`` holds the fields sent."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _no_nulls(self) -> Self:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class FlagsIn(Patch):
    """Any subset of the four flags, by name; null is not a value."""

    USE_SEPARATED_QUEUES: _Bool = None
    USE_NEW_QUEUE_SERVICES: _Bool = None
    MIGRATION_MODE: _Mode = None
    ENABLE_QUEUE_VALIDATION: _Bool = None


class FlagsOut(BaseModel):
    USE_SEPARATED_QUEUES: bool
    USE_NEW_QUEUE_SERVICES: bool
    MIGRATION_MODE: MigrationMode
    ENABLE_QUEUE_VALIDATION: bool
    serving_mode: Literal["queues", "dual", "direct"]


class LedgerRow(BaseModel):
    assignment_id: str
    agent_id: int
    agent_name: str
    user_id: int
    queue_type: str
    source: Literal["queue", "direct", "callback"]
    queue_entry_id: str | None
    callback_id: str | None
    claim_id: int | None
    status: str
    assigned_at: datetime
    lease_expires_at: datetime
    finished_at: datetime | None
    outcome: str | None
    callback_at: datetime | None
    # Free-text release reasons, like notes, appear in no listing (they are kept on the row).


class LedgerPage(BaseModel):
    items: list[LedgerRow]
    limit: int
    offset: int
    total: int


class ActivityHour(BaseModel):
    hour_start: datetime
    handed_out: int
    sources: dict[str, int]
    outcomes: dict[str, int]
    completed: int
    released: int
    expired: int


class ActivityOut(BaseModel):
    """Hand-outs and endings per whole UTC hour, oldest first; the last hour is the current one."""

    generated_at: datetime
    hours: int
    timezone: Literal["UTC"]
    buckets: list[ActivityHour]


# -- callbacks (SPEC 7.2) -----------------------------------------------------------------------


class CallbackOut(BaseModel):
    id: str
    user_id: int
    queue_type: Literal["unsigned_users", "outstanding_requests"]
    due_at: datetime
    status: Literal["scheduled", "assigned", "completed", "cancelled"]
    agent_id: int = Field(description="the owner: the agent who booked it, or was given it")
    booked_at: datetime
    first_handed_out_at: datetime | None
    finished_at: datetime | None
    cancel_reason: str | None


class CallbackList(BaseModel):
    items: list[CallbackOut]


class CallbackPage(BaseModel):
    items: list[CallbackOut]
    total: int


class CallbackCancelIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: FreeText | None = Field(None, max_length=500, description="kept in the audit only")


class CallbackReassignIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent_id: StrictInt = Field(ge=1, le=2**31 - 1)
    reason: FreeText | None = Field(None, max_length=500, description="kept in the audit only")


class ErasureOut(BaseModel):
    user_id: int
    erased_at: datetime
    removed: dict[str, int] = Field(description="rows deleted or cleared, per table")


class ExportOut(BaseModel):
    """Everything held about a person. An erased person's: ``user_id``, ``erased`` (true) and
    ``erased_at`` only."""

    model_config = ConfigDict(extra="allow")

    user_id: int
    erased: bool
    erased_at: datetime | None = None
