"""Callback routes (SPEC 7.2): an agent's own open callbacks; the supervisors' listing, cancel and
reassign (audited). Contact details never appear here: only the agent holding the assignment
sees them, through the assignment."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from app.api.deps import AgentDep, ServicesDep, SupervisorDep
from app.api.errors import responses
from app.api.routing import CredentialsFirstRoute
from app.api.schemas import (
    CallbackCancelIn,
    CallbackList,
    CallbackOut,
    CallbackPage,
    CallbackReassignIn,
    IsoDateTimeQuery,
)
from app.queues.callbacks import CallbackFilter

router = APIRouter(prefix="/api", tags=["callbacks"], route_class=CredentialsFirstRoute)


@router.get("/callbacks/mine", response_model=CallbackList, responses=responses(401))
def my_callbacks(agent: AgentDep, services: ServicesDep) -> Any:
    """The calling agent's open callbacks (scheduled or being served), soonest first."""
    return {"items": services.callbacks.mine(agent)}


@router.get("/callbacks", response_model=CallbackPage, responses=responses(401, 403, 422))
def callbacks(
    _: SupervisorDep,
    services: ServicesDep,
    status: Annotated[
        str | None,
        Query(
            pattern="^(scheduled|assigned|completed|cancelled)$",
            description="default: the open ones (scheduled and assigned)",
        ),
    ] = None,
    agent_id: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="the owner")] = None,
    due_before: Annotated[IsoDateTimeQuery, Query(description="due strictly before")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> Any:
    return services.callbacks.listing(
        CallbackFilter(status, agent_id, due_before), limit=limit, offset=offset
    )


@router.post(
    "/admin/callbacks/{callback_id}/cancel",
    response_model=CallbackOut,
    responses=responses(401, 403, 404, 409, 422),
)
def cancel_callback(
    callback_id: uuid.UUID,
    supervisor: SupervisorDep,
    services: ServicesDep,
    body: Annotated[CallbackCancelIn | None, Body()] = None,
) -> Any:
    return services.callbacks.cancel(supervisor, callback_id, body.reason if body else None)


@router.post(
    "/admin/callbacks/{callback_id}/reassign",
    response_model=CallbackOut,
    responses=responses(401, 403, 404, 409, 422),
)
def reassign_callback(
    callback_id: uuid.UUID,
    body: CallbackReassignIn,
    supervisor: SupervisorDep,
    services: ServicesDep,
) -> Any:
    return services.callbacks.reassign(supervisor, callback_id, body.agent_id, body.reason)
