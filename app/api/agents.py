"""The agent dashboard's routes (SPEC 4.2)."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Connection

from app.api.deps import (
    QUEUE_TYPES,
    AgentDep,
    Caller,
    DashboardDep,
    HoldingDashboardDep,
    ServicesDep,
    in_thread,
    queue_type_of,
)
from app.api.errors import responses
from app.api.routing import CredentialsFirstRoute
from app.api.schemas import AssignmentOut, CompletedOut, CompleteIn, ReleaseIn, StatsOut
from app.errors import QueueNotAllowed
from app.queues.assignments import AssignmentService, Completed
from app.queues.claims import Claimed, ClaimService
from app.queues.reports import queue_stats
from app.queues.views import assignment_view, score_view

router = APIRouter(prefix="/api", tags=["agents"], route_class=CredentialsFirstRoute)


def _json(body: dict[str, Any]) -> JSONResponse:
    """The views are built to the declared schema already (tests check it against the OpenAPI
    document); answering a Response skips FastAPI's re-validation, a threadpool hop per request
    on the dashboards' hottest routes."""
    return JSONResponse(body)


def _next_user(
    caller: Caller, conn: Connection, claims: ClaimService, queue_type: str
) -> Claimed | None:
    """next-user's step, on the worker thread, after the authentication (``Dashboard.run``): an
    unknown queue is a 404 only for a caller who may ask, and a queue outside the person's allowed
    queues a 403 (SPEC 8.2)."""
    queue = queue_type_of(queue_type)
    if queue not in caller.agent.allowed_queues:
        raise QueueNotAllowed(f"you are not allowed to work the {queue} queue: ask a supervisor")
    return claims.next_user(caller.agent, queue, caller.flags, conn, caller.window)


def _complete(
    caller: Caller,
    conn: Connection,
    assignments: AssignmentService,
    assignment_id: uuid.UUID,
    body: CompleteIn,
) -> Completed:
    return assignments.complete(
        caller.agent,
        assignment_id,
        body.outcome,
        body.callback_at,
        body.notes,
        conn,
        caller.window,
        caller.holding,
    )


# The two routes every dashboard calls all day come first (routes are matched in order). They
# are async and hand their blocking work to the application's thread pool in one hop
# (``in_thread``), which costs less per request than the AnyIO hop of a sync route.


@router.post(
    "/queues/{queue_type}/next-user",
    response_model=AssignmentOut,
    responses={
        204: {"description": "no valid user is available"},
        **responses(401, 403, 404, 409, 503),
    },
)
async def next_user(
    queue_type: Annotated[str, Path(json_schema_extra={"enum": QUEUE_TYPES})],
    ask: DashboardDep,
    request: Request,
) -> Any:
    claimed = await in_thread(request, ask.run, _next_user, ask.services.claims, queue_type)
    if claimed is None:
        return Response(status_code=204)
    return _json(assignment_view(claimed.assignment, claimed.contact, resumed=claimed.resumed))


@router.post(
    "/assignments/{assignment_id}/complete",
    response_model=CompletedOut,
    responses=responses(401, 404, 409, 422),
)
async def complete(
    assignment_id: uuid.UUID,
    body: CompleteIn,
    ask: HoldingDashboardDep,
    request: Request,
) -> Any:
    done = await in_thread(
        request, ask.run, _complete, ask.services.assignments, assignment_id, body
    )
    booked = done.assignment.booked_callback_id
    return _json(
        {
            **assignment_view(done.assignment, None),
            "score": score_view(done.score),
            "callback": (
                {"id": str(booked), "due_at": done.assignment.booked_callback_due_at.isoformat()}
                if booked is not None
                else None
            ),
        }
    )


@router.get("/queues/stats", response_model=StatsOut, responses=responses(401, 422))
def stats(
    _: AgentDep,
    services: ServicesDep,
    window_minutes: Annotated[int, Query(ge=1, le=1440)] = 15,
) -> Any:
    """Live figures per queue and activity over the last ``window_minutes``; open to agents."""
    with services.engine.connect() as conn:
        return queue_stats(conn, window_minutes, services.settings.callback_grace_minutes)


@router.get(
    "/assignments/current",
    response_model=AssignmentOut,
    responses={204: {"description": "no active assignment"}, **responses(401, 503)},
)
def current(agent: AgentDep, services: ServicesDep) -> Any:
    held = services.assignments.current(agent)
    if held is None:
        return Response(status_code=204)
    return _json(assignment_view(*held))


@router.post(
    "/assignments/{assignment_id}/extend",
    response_model=AssignmentOut,
    responses=responses(401, 404, 409, 422),
)
def extend(assignment_id: uuid.UUID, agent: AgentDep, services: ServicesDep) -> Any:
    return _json(assignment_view(*services.assignments.extend(agent, assignment_id)))


@router.post(
    "/assignments/{assignment_id}/release",
    response_model=AssignmentOut,
    responses=responses(401, 404, 409, 422),
)
def release(
    assignment_id: uuid.UUID,
    agent: AgentDep,
    services: ServicesDep,
    body: Annotated[ReleaseIn | None, Body()] = None,
) -> Any:
    body = body or ReleaseIn(requeue=True, reason=None)
    row = services.assignments.release(
        agent, assignment_id, requeue=body.requeue, reason=body.reason
    )
    return _json(assignment_view(row, None))
