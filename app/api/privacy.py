"""Personal data (SPEC 8.3): erasure and access requests, for admins; both audited."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from fastapi.responses import JSONResponse

from app.api.deps import AdminDep, ServicesDep
from app.api.errors import responses
from app.api.routing import CredentialsFirstRoute
from app.api.schemas import ErasureOut, ExportOut
from app.privacy.erasure import MAX_USER_ID, erase
from app.privacy.export import export

router = APIRouter(
    prefix="/api/admin/users", tags=["personal data"], route_class=CredentialsFirstRoute
)

UserId = Annotated[int, Path(ge=1, le=MAX_USER_ID, description="the claims platform's user id")]
PRIVATE = {"Cache-Control": "no-store"}


@router.post("/{user_id}/erase", response_model=ErasureOut, responses=responses(401, 403, 422))
def erase_user(user_id: UserId, admin: AdminDep, services: ServicesDep) -> Any:
    """Erase everything held about the person, in one transaction, and keep them from coming
    back; the counts say what went. Erasing again answers the same with every count zero."""
    with services.engine.begin() as conn:
        done = erase(
            conn,
            user_id,
            agent_id=admin.id,
            grace_minutes=services.settings.callback_grace_minutes,
        )
    return done.as_dict()


@router.get("/{user_id}/export", response_model=ExportOut, responses=responses(401, 403, 422))
def export_user(user_id: UserId, admin: AdminDep, services: ServicesDep) -> Any:
    """Everything held about the person, as one JSON document (an erased person's: the
    tombstone alone)."""
    with services.engine.begin() as conn:
        document = export(conn, services.replica, services.suppression, user_id, agent_id=admin.id)
    return JSONResponse(document, headers=PRIVATE)
