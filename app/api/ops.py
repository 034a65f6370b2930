"""Liveness and readiness for load balancers and orchestrators."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from app.api.deps import ServicesDep
from app.health import readiness

router = APIRouter(tags=["ops"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    """Liveness: the process answers. No I/O, so a database outage never restarts workers."""
    return {"status": "alive"}


@router.get("/readyz", responses={503: {"description": "not ready"}})
def readyz(services: ServicesDep) -> Any:
    """Ready when the database answers and its schema is at the latest migration. The replica's
    state is reported but never fails readiness: a replica blip must not empty the load balancer."""
    body = readiness(services.engine, services.replica)
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)
