"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app import collectors
from app.api.deps import ServicesDep, bearer_of, secret_matches
from app.api.errors import responses
from app.api.schemas import Liveness, Readiness
from app.errors import Unauthorized
from app.health import readiness

router = APIRouter(tags=["ops"])


@router.get("/healthz", response_model=Liveness)
async def healthz() -> dict[str, str]:
    """Liveness: the process answers. No I/O, so a database outage never restarts workers; and
    async, so it answers even when every thread of the pool is busy with a slow request."""
    return {"status": "alive"}


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
def readyz(services: ServicesDep) -> Any:
    """Ready when the database answers, its schema is at the latest migration and this process's
    SUPPRESSION_KEY is the do-not-call list's. The replica's state is reported but never fails
    readiness: a replica blip must not empty the load balancer."""
    body = readiness(services.engine, services.replica_monitor, services.suppression.key_state)
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {"text/plain": {"schema": {"type": "string"}}}},
        **responses(401),
    },
)
def prometheus_metrics(services: ServicesDep, request: Request) -> Response:
    """Prometheus text format: every worker's counters plus queue depth read at scrape time.
    With METRICS_TOKEN set, scrapers present it as a bearer token (401 otherwise); the header is
    read here rather than declared as a security scheme, since the token is optional."""
    token = services.settings.metrics_token
    if token is not None and not secret_matches(bearer_of(request), token):
        raise Unauthorized("a valid metrics bearer token is required")
    body, content_type = collectors.render(services.engine, services.settings)
    return Response(body, media_type=content_type)
