"""The scheduler's routes: hourly population (GET), the health check (POST), the queue-level
check and discovery."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import JSONResponse

from app.api.deps import ServicesDep, require_cron_secret
from app.api.errors import responses
from app.api.intake_schemas import DiscoveryReportOut
from app.api.routing import CredentialsFirstRoute
from app.api.schemas import HealthReport, PopulationReport, QueueLevelCheck
from app.health import health_report
from app.vocabulary import QueueType

router = APIRouter(
    prefix="/api/cron",
    tags=["cron"],
    dependencies=[Depends(require_cron_secret)],
    route_class=CredentialsFirstRoute,
)


@router.get(
    "/populate-separated-queues",
    response_model=PopulationReport,
    responses={**responses(401, 409, 422), 500: {"model": PopulationReport}},
)
def populate(
    services: ServicesDep,
    queue: Annotated[QueueType | None, Query(description="populate only this queue")] = None,
    dry_run: Annotated[bool, Query(description="report without writing")] = False,
) -> Any:
    report = services.population().run(trigger="cron", queue=queue, dry_run=dry_run)
    return JSONResponse(report.as_dict(), status_code=200 if report.success else 500)


@router.post(
    "/populate-separated-queues",
    response_model=HealthReport,
    responses={**responses(401), 503: {"model": HealthReport}},
)
def health(services: ServicesDep) -> Any:
    body = health_report(
        services.engine, services.replica_monitor, services.settings, services.flags()
    )
    return JSONResponse(body, status_code=503 if body["status"] == "unhealthy" else 200)


@router.get(
    "/queue-level-check",
    response_model=QueueLevelCheck,
    responses={**responses(401, 409), 500: {"model": QueueLevelCheck}},
)
def queue_level_check(services: ServicesDep) -> Any:
    """Refill any queue below QUEUE_LOW_WATERMARK, at most once per REPLENISH_MIN_INTERVAL_MINUTES
    (an empty queue: once a minute). Says what it did for each queue and why."""
    s = services.settings
    body = services.population().replenish(
        watermark=s.queue_low_watermark, min_interval_minutes=s.replenish_min_interval_minutes
    )
    failed = body["run"] is not None and not body["run"]["success"]
    return JSONResponse(body, status_code=500 if failed else 200)


@router.get(
    "/discover",
    response_model=DiscoveryReportOut,
    responses={**responses(401, 409), 500: {"model": DiscoveryReportOut}},
)
def discover(services: ServicesDep) -> Any:
    """Discover new leads on the replica now (the scheduler's ``discovery`` job): 200 when the
    run succeeded, 500 with the same body when it failed, 409 when one is already running."""
    report = services.discovery().run(trigger="cron")
    return JSONResponse(report.as_dict(), status_code=200 if report.success else 500)
