"""Supervisor routes: flags, forced release, the assignment ledger, a population on demand and
the activity report."""

from __future__ import annotations

import logging
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from fastapi.responses import JSONResponse

from app.api.deps import QueueTypeDep, ServicesDep, SupervisorDep
from app.api.errors import responses
from app.api.routing import CredentialsFirstRoute
from app.api.schemas import (
    ActivityOut,
    AssignmentOut,
    EntryPage,
    FlagsIn,
    FlagsOut,
    IsoDateTimeQuery,
    LedgerPage,
    PopulationReport,
    ReleaseIn,
    RunPage,
)
from app.flags import Flags, update_flags
from app.queues.ledger import LedgerFilter, list_ledger
from app.queues.reports import ACTIVITY_MAX_HOURS, activity_by_hour, list_entries, list_runs
from app.queues.views import assignment_view
from app.vocabulary import QueueType

router = APIRouter(prefix="/api", tags=["supervisors"], route_class=CredentialsFirstRoute)
log = logging.getLogger(__name__)


def _flags_out(flags: Flags) -> dict[str, Any]:
    return {**flags.as_dict(), "serving_mode": flags.serving_mode}


@router.get("/admin/flags", response_model=FlagsOut, responses=responses(401, 403))
def get_flags(_: SupervisorDep, services: ServicesDep) -> Any:
    return _flags_out(services.flags())


@router.put("/admin/flags", response_model=FlagsOut, responses=responses(401, 403, 422))
def put_flags(body: FlagsIn, supervisor: SupervisorDep, services: ServicesDep) -> Any:
    with services.engine.begin() as conn:
        flags = update_flags(conn, services.settings, body.changes(), supervisor.id)
    return _flags_out(flags)


@router.post(
    "/admin/assignments/{assignment_id}/release",
    response_model=AssignmentOut,
    responses=responses(401, 403, 404, 409, 422),
)
def force_release(
    assignment_id: uuid.UUID,
    supervisor: SupervisorDep,
    services: ServicesDep,
    body: Annotated[ReleaseIn | None, Body()] = None,
) -> Any:
    reason = body.reason if body else None
    row = services.assignments.release(
        supervisor, assignment_id, requeue=True, reason=reason, forced=True
    )
    return assignment_view(row, None)


@router.get("/assignments", response_model=LedgerPage, responses=responses(401, 403, 422))
def ledger(
    _: SupervisorDep,
    services: ServicesDep,
    agent_id: Annotated[int | None, Query(ge=1, le=2**31 - 1)] = None,
    user_id: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None,
    queue_type: Annotated[
        str | None, Query(pattern="^(unsigned_users|outstanding_requests)$")
    ] = None,
    status: Annotated[str | None, Query(pattern="^(active|completed|released|expired)$")] = None,
    since: Annotated[IsoDateTimeQuery, Query(description="assigned at or after")] = None,
    until: Annotated[IsoDateTimeQuery, Query(description="assigned before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    with services.engine.connect() as conn:
        return list_ledger(
            conn,
            LedgerFilter(agent_id, user_id, queue_type, status, since, until),
            limit=limit,
            offset=offset,
        )


@router.get(
    "/queues/{queue_type}", response_model=EntryPage, responses=responses(401, 403, 404, 422)
)
def queue_listing(
    queue_type: QueueTypeDep,
    _: SupervisorDep,
    services: ServicesDep,
    status: Annotated[
        str | None, Query(pattern="^(pending|assigned|completed|skipped|invalid)$")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> Any:
    with services.engine.connect() as conn:
        return list_entries(conn, queue_type, status, limit=limit, offset=offset)


@router.get("/population-runs", response_model=RunPage, responses=responses(401, 403, 422))
def population_runs(
    _: SupervisorDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    with services.engine.connect() as conn:
        return list_runs(conn, limit=limit, offset=offset)


@router.post(
    "/admin/populate",
    response_model=PopulationReport,
    responses={**responses(401, 403, 409, 422), 500: {"model": PopulationReport}},
)
def populate_now(
    supervisor: SupervisorDep,
    services: ServicesDep,
    queue: Annotated[QueueType | None, Query(description="populate only this queue")] = None,
    dry_run: Annotated[bool, Query(description="report without writing")] = False,
) -> Any:
    """The cron route's population, for a supervisor's token: the cron secret never has to reach
    a browser. Same report, same statuses (500 when a queue failed, 409 while another population
    runs); the run history records the trigger as ``supervisor``."""
    log.info("population.requested", extra={"agent_id": supervisor.id, "dry_run": dry_run})
    report = services.population().run(trigger="supervisor", queue=queue, dry_run=dry_run)
    return JSONResponse(report.as_dict(), status_code=200 if report.success else 500)


@router.get("/reports/activity", response_model=ActivityOut, responses=responses(401, 403, 422))
def activity(
    _: SupervisorDep,
    services: ServicesDep,
    hours: Annotated[int, Query(ge=1, le=ACTIVITY_MAX_HOURS)] = 24,
) -> Any:
    """Hand-outs and outcomes per whole UTC hour over the last ``hours``, from the ledger and the
    database clock: the supervisors' chart."""
    with services.engine.connect() as conn:
        return activity_by_hour(conn, hours)
