"""Webhook endpoints (SPEC 8.4), for admins: register, change, rotate, test, read the delivery
log and redeliver. Every change is audited (app/webhooks/endpoints.py)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, WithJsonSchema

from app.api.deps import AdminDep, ServicesDep
from app.api.errors import responses
from app.api.people import address_of
from app.api.routing import CredentialsFirstRoute
from app.api.schemas import FreeText, Patch
from app.webhooks import endpoints
from app.webhooks.delivery import EVENT_TYPES
from app.webhooks.endpoints import MAX_DESCRIPTION, Actor
from app.webhooks.targets import MAX_URL_LENGTH

router = APIRouter(
    prefix="/api/admin/webhooks", tags=["webhooks"], route_class=CredentialsFirstRoute
)

EndpointId = Annotated[uuid.UUID, Path(description="the endpoint's id")]
PRIVATE = {"Cache-Control": "no-store"}

Url = Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH)]
EventType = Literal[EVENT_TYPES]  # type: ignore[valid-type]
EventTypes = Annotated[list[EventType], Field(min_length=1, max_length=len(EVENT_TYPES))]
Description = Annotated[FreeText, Field(max_length=MAX_DESCRIPTION)]


class WebhookIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: Url
    event_types: EventTypes
    description: Description = ""


class WebhookPatch(Patch):
    """Any of these, by name; null is not a value."""

    url: Annotated[Url | None, WithJsonSchema({"type": "string", "minLength": 1})] = None
    event_types: Annotated[
        EventTypes | None,
        WithJsonSchema(
            {"type": "array", "items": {"type": "string", "enum": list(EVENT_TYPES)}, "minItems": 1}
        ),
    ] = None
    description: Annotated[
        Description | None,
        WithJsonSchema({"type": "string", "maxLength": MAX_DESCRIPTION, "pattern": r"^[^\x00]*$"}),
    ] = None
    enabled: Annotated[StrictBool | None, WithJsonSchema({"type": "boolean"})] = None


class WebhookOut(BaseModel):
    id: uuid.UUID
    url: str
    event_types: list[str]
    description: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str = Field(description="the signing secret (whsec_...), shown this once")


class WebhookRotated(WebhookCreated):
    previous_secret_expires_at: datetime = Field(
        description="until when the old secret signs beside the new one"
    )


class WebhooksOut(BaseModel):
    items: list[WebhookOut]


class AttemptOut(BaseModel):
    id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    attempt: int
    status_code: int | None
    duration_ms: int
    error: str | None
    attempted_at: datetime
    seq: int
    delivery_status: Literal["pending", "delivered", "failed"]


class AttemptsOut(BaseModel):
    items: list[AttemptOut]


class TestOut(BaseModel):
    delivery_id: uuid.UUID
    delivered: bool
    status_code: int | None
    duration_ms: int | None
    error: str | None


class RedeliveryOut(BaseModel):
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    endpoint_id: uuid.UUID
    seq: int
    status: Literal["pending"]


def _actor(admin: Any, request: Request) -> Actor:
    return Actor(admin.id, address_of(request))


@router.get("", response_model=WebhooksOut, responses=responses(401, 403))
def list_webhooks(admin: AdminDep, services: ServicesDep) -> Any:
    with services.engine.connect() as conn:
        return {"items": endpoints.listed(conn)}


@router.post("", status_code=201, response_model=WebhookCreated, responses=responses(401, 403, 422))
def create_webhook(
    body: WebhookIn, request: Request, admin: AdminDep, services: ServicesDep
) -> Any:
    """A new endpoint; the answer carries its signing secret, shown this once."""
    with services.engine.begin() as conn:
        made = endpoints.create(
            conn,
            services.settings,
            _actor(admin, request),
            url=body.url,
            event_types=body.event_types,
            description=body.description,
        )
    return JSONResponse(made, status_code=201, headers=PRIVATE)


@router.get("/{endpoint_id}", response_model=WebhookOut, responses=responses(401, 403, 404, 422))
def get_webhook(endpoint_id: EndpointId, admin: AdminDep, services: ServicesDep) -> Any:
    with services.engine.connect() as conn:
        return endpoints.endpoint_dict(endpoints.get(conn, endpoint_id))


@router.patch("/{endpoint_id}", response_model=WebhookOut, responses=responses(401, 403, 404, 422))
def change_webhook(
    endpoint_id: EndpointId,
    body: WebhookPatch,
    request: Request,
    admin: AdminDep,
    services: ServicesDep,
) -> Any:
    """Change the URL, the event types or the description, or disable/enable it (enabling sends
    what waited meanwhile)."""
    with services.engine.begin() as conn:
        return endpoints.update(
            conn, services.settings, _actor(admin, request), endpoint_id, body.changes()
        )


@router.delete(
    "/{endpoint_id}",
    status_code=204,
    response_class=Response,
    responses=responses(401, 403, 404, 422),
)
def delete_webhook(
    endpoint_id: EndpointId, request: Request, admin: AdminDep, services: ServicesDep
) -> Response:
    with services.engine.begin() as conn:
        endpoints.delete(conn, _actor(admin, request), endpoint_id)
    return Response(status_code=204)


@router.post(
    "/{endpoint_id}/rotate-secret",
    response_model=WebhookRotated,
    responses=responses(401, 403, 404, 422),
)
def rotate_secret(
    endpoint_id: EndpointId, request: Request, admin: AdminDep, services: ServicesDep
) -> Any:
    """A new secret, shown this once; the old one signs beside it for 24 hours."""
    with services.engine.begin() as conn:
        rotated = endpoints.rotate(conn, _actor(admin, request), endpoint_id)
    return JSONResponse(rotated, headers=PRIVATE)


@router.post("/{endpoint_id}/test", response_model=TestOut, responses=responses(401, 403, 404, 422))
def test_webhook(
    endpoint_id: EndpointId, request: Request, admin: AdminDep, services: ServicesDep
) -> Any:
    """Send a ``webhook.test`` event to this endpoint now, and say how it went (it is in the
    delivery log, and retried on the schedule if it failed)."""
    with services.engine.begin() as conn:
        delivery_id = endpoints.add_test_event(conn, _actor(admin, request), endpoint_id)
    answer = services.deliverer.deliver_now(delivery_id)
    if answer is None:  # no longer pending: removed meanwhile, or sent already
        return {
            "delivery_id": delivery_id,
            "delivered": False,
            "status_code": None,
            "duration_ms": None,
            "error": "no longer waiting to be sent; see the delivery log",
        }
    return {
        "delivery_id": delivery_id,
        "delivered": answer.delivered,
        "status_code": answer.status_code,
        "duration_ms": answer.duration_ms,
        "error": answer.error,
    }


@router.get(
    "/{endpoint_id}/deliveries", response_model=AttemptsOut, responses=responses(401, 403, 404, 422)
)
def deliveries(
    endpoint_id: EndpointId,
    admin: AdminDep,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Any:
    """The endpoint's delivery log: every attempt, newest first."""
    with services.engine.connect() as conn:
        return {"items": endpoints.attempts(conn, endpoint_id, limit)}


@router.post(
    "/deliveries/{attempt_id}/redeliver",
    status_code=202,
    response_model=RedeliveryOut,
    responses=responses(401, 403, 404, 422),
)
def redeliver(
    attempt_id: Annotated[uuid.UUID, Path(description="an attempt's id, from the delivery log")],
    request: Request,
    admin: AdminDep,
    services: ServicesDep,
) -> Any:
    """Send that attempt's event again (the same ``webhook-id``), as soon as a sender gets to
    it, on a new round of the retry schedule."""
    with services.engine.begin() as conn:
        queued = endpoints.redeliver(conn, _actor(admin, request), attempt_id)
    return JSONResponse(queued, status_code=202)
