"""Routes of the calling rules (SPEC 7.3, 8.1): the calling hours for anyone signed in; for
supervisors the rules in force, the suppression list and the compliance report."""

from __future__ import annotations

import re
from datetime import date, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, StrictStr, model_validator

from app.api.deps import AgentDep, ServicesDep, SupervisorDep
from app.api.errors import responses
from app.api.routing import CredentialsFirstRoute
from app.hours import CallingRules
from app.rules import suppression
from app.rules.calling import rules_status, update_calling_rules
from app.rules.compliance import compliance_report, parse_period_dates

router = APIRouter(
    prefix="/api", tags=["calling rules and compliance"], route_class=CredentialsFirstRoute
)

MAX_PHONES = 10_000
MAX_HOLIDAYS = 1000

# -- schemas -------------------------------------------------------------------------------------


def _iso_date(value: Any) -> Any:
    """ISO date strings only: pydantic would otherwise read a bare number as a timestamp."""
    if not isinstance(value, str) or not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        raise ValueError("must be an ISO date (YYYY-MM-DD)")
    return value


IsoDate = Annotated[date, BeforeValidator(_iso_date)]


class CallingRulesIn(BaseModel):
    """Any subset of the three; null is not a value."""

    model_config = ConfigDict(extra="forbid")

    timezone: StrictStr | None = Field(None, max_length=64, description="IANA name")
    hours: StrictStr | None = Field(
        None, max_length=1000, description="e.g. 'mon-fri 08:00-21:00; sat 09:00-17:00'"
    )
    holidays: list[IsoDate] | None = Field(None, max_length=MAX_HOLIDAYS)

    @model_validator(mode="after")
    def _no_nulls(self) -> CallingRulesIn:
        for name in self.model_fields_set:
            if getattr(self, name) is None:
                raise ValueError(f"{name} cannot be null")
        return self

    def changes(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.model_fields_set}


class CallingRulesOut(BaseModel):
    timezone: str
    hours: str
    holidays: list[date]
    open_now: bool = Field(description="whether calling is allowed now (the database's clock)")
    opens_at: datetime | None = Field(
        description="now when open, else the next opening; null when the rules never open"
    )


class CallingHoursOut(BaseModel):
    timezone: str
    hours: str = Field(description="the rule text in force")
    holidays: list[date]
    open_now: bool = Field(description="whether calling is allowed now (the database's clock)")
    opens_at: datetime | None = Field(
        description="when closed, the next opening; null when open or when the rules never open"
    )
    closes_at: datetime | None = Field(
        description="when open, the next closing; null when closed or when the rules never close"
    )


class PhonesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    phones: list[Annotated[StrictStr, Field(max_length=suppression.MAX_PHONE_LENGTH)]] = Field(
        min_length=1, max_length=MAX_PHONES
    )


class SuppressionCount(BaseModel):
    count: int


class SuppressionAdded(BaseModel):
    added: int
    already_present: int
    count: int


class SuppressionRemoved(BaseModel):
    removed: int
    not_present: int
    count: int


class ReportColumn(BaseModel):
    name: str
    description: str


class ComplianceReport(BaseModel):
    from_: date = Field(alias="from")
    to: date
    timezone: str
    generated_at: datetime
    caps: dict[str, int]
    columns: list[ReportColumn]
    days: list[dict[str, int | str]] = Field(
        description="one object per day: 'date', then every column's count"
    )
    totals: dict[str, int]


# -- routes --------------------------------------------------------------------------------------


@router.get("/calling-hours", response_model=CallingHoursOut, responses=responses(401, 403))
def calling_hours(_: AgentDep, services: ServicesDep) -> Any:
    """The calling rules in force (the supervisors' change included) and the window around now,
    for anyone signed in: an agent's callback picker offers only times inside it."""
    with services.engine.connect() as conn:
        window = services.calling_window(conn)
    return calling_hours_view(window.rules, window.now)


def calling_hours_view(rules: CallingRules, now: datetime) -> dict[str, Any]:
    open_now = rules.is_open(now)
    return {
        **rules.as_dict(),
        "open_now": open_now,
        "opens_at": None if open_now else rules.next_open(now),
        "closes_at": rules.next_close(now) if open_now else None,
    }


@router.get("/admin/calling-rules", response_model=CallingRulesOut, responses=responses(401, 403))
def get_calling_rules(_: SupervisorDep, services: ServicesDep) -> Any:
    with services.engine.connect() as conn:
        return rules_status(conn, services.settings)


@router.put(
    "/admin/calling-rules", response_model=CallingRulesOut, responses=responses(401, 403, 422)
)
def put_calling_rules(
    body: CallingRulesIn, supervisor: SupervisorDep, services: ServicesDep
) -> Any:
    """Change any subset; audited, and in force in every process from its next request."""
    with services.engine.begin() as conn:
        update_calling_rules(conn, services.settings, body.changes(), supervisor.id)
        return rules_status(conn, services.settings)


@router.get("/admin/suppression", response_model=SuppressionCount, responses=responses(401, 403))
def suppression_count(_: SupervisorDep, services: ServicesDep) -> Any:
    """How many numbers are on the list (the list itself is never shown: it holds only hashes)."""
    with services.engine.connect() as conn:
        return {"count": suppression.count(conn)}


@router.post(
    "/admin/suppression", response_model=SuppressionAdded, responses=responses(401, 403, 422)
)
def suppression_add(body: PhonesIn, supervisor: SupervisorDep, services: ServicesDep) -> Any:
    """Add numbers (audited). Any number that is not a possible phone number is a 422 naming its
    position, and nothing is written."""
    with services.engine.begin() as conn:
        result = services.suppression.add(conn, body.phones, "api", supervisor.id)
        return {
            "added": result.added,
            "already_present": result.already_present,
            "count": suppression.count(conn),
        }


@router.delete(
    "/admin/suppression", response_model=SuppressionRemoved, responses=responses(401, 403, 422)
)
def suppression_remove(
    body: Annotated[PhonesIn, Body()], supervisor: SupervisorDep, services: ServicesDep
) -> Any:
    """Remove numbers (audited), with the same body as adding them."""
    with services.engine.begin() as conn:
        result = services.suppression.remove(conn, body.phones, "api", supervisor.id)
        return {
            "removed": result.removed,
            "not_present": result.not_present,
            "count": suppression.count(conn),
        }


@router.get(
    "/reports/compliance",
    response_model=ComplianceReport,
    response_model_by_alias=True,
    responses=responses(401, 403, 422),
)
def compliance(
    _: SupervisorDep,
    services: ServicesDep,
    from_: Annotated[str, Query(alias="from", description="first day, YYYY-MM-DD")],
    to: Annotated[str, Query(description="last day (inclusive), YYYY-MM-DD")],
) -> Any:
    """Per day (local dates of the calling rules' time zone): hand-outs, those outside calling
    hours (judged by the rules of their moment), over the attempt caps, and refused for
    suppression or a cap. At most 366 days."""
    first, last = parse_period_dates(from_, to)
    with services.engine.connect() as conn:
        return compliance_report(conn, services.settings, first, last)
