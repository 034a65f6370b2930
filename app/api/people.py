"""Who am I, people and API tokens (SPEC 8.2): supervisors manage agents, admins everyone and
the tokens. Every change is audited in its own transaction (app/auth/audit.py)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from app.api.deps import AdminDep, AuthenticatedDep, ServicesDep, SupervisorDep, refuse_scorer
from app.api.errors import responses
from app.api.people_schemas import (
    LinkOut,
    MeOut,
    PeopleOut,
    PersonCreated,
    PersonIn,
    PersonOut,
    PersonPatch,
    SignedOutOut,
    TokenCreated,
    TokenIn,
    TokenOut,
    TokensOut,
)
from app.api.routing import CredentialsFirstRoute
from app.auth import api_tokens, people
from app.errors import Forbidden

router = APIRouter(prefix="/api", tags=["people"], route_class=CredentialsFirstRoute)

PersonId = Annotated[int, Path(ge=1, le=2**31 - 1)]
TokenId = Annotated[int, Path(ge=1, le=2**63 - 1)]


def address_of(request: Request) -> str | None:
    """The client's address as the server sees it (behind a proxy, uvicorn's
    ``--forwarded-allow-ips`` makes it the forwarded one): for the audit."""
    return request.client.host if request.client else None


@router.get("/me", response_model=MeOut, responses=responses(401, 403))
async def me(found: AuthenticatedDep) -> Any:
    """The signed-in person, and the CSRF token their cookie-authenticated writes carry."""
    agent = refuse_scorer(found.agent)
    return {
        "id": agent.id,
        "email": agent.email,
        "display_name": agent.display_name,
        "role": agent.role,
        "allowed_queues": list(agent.allowed_queues),
        "auth": str(found.via),
        "csrf_token": found.csrf_token,
    }


@router.get("/admin/people", response_model=PeopleOut, responses=responses(401, 403))
def list_people(_: SupervisorDep, services: ServicesDep) -> Any:
    with services.engine.connect() as conn:
        return {"items": [p.view() for p in people.list_people(conn)]}


@router.post(
    "/admin/people",
    status_code=201,
    response_model=PersonCreated,
    responses=responses(401, 403, 409, 422),
)
def create_person(
    body: PersonIn,
    supervisor: SupervisorDep,
    services: ServicesDep,
    request: Request,
    response: Response,
) -> Any:
    """A new person; with passwords on, their one-time set-password link (shown once)."""
    settings = services.settings
    with services.engine.begin() as conn:
        created = people.create_person(
            conn,
            supervisor,
            email=body.email,
            display_name=body.display_name or "",
            role=body.role,
            allowed_queues=body.allowed_queues,
            address=address_of(request),
            base_url=settings.base_url if settings.password_login else None,
        )
    response.headers["Cache-Control"] = "no-store"  # the link is shown once
    return {"person": created.person.view(), "set_password_link": created.link}


@router.patch(
    "/admin/people/{person_id}",
    response_model=PersonOut,
    responses=responses(401, 403, 404, 409, 422),
)
def update_person(
    person_id: PersonId,
    body: PersonPatch,
    supervisor: SupervisorDep,
    services: ServicesDep,
    request: Request,
) -> Any:
    with services.engine.begin() as conn:
        person = people.update_person(
            conn, supervisor, person_id, body.changes(), address=address_of(request)
        )
    return person.view()


@router.post(
    "/admin/people/{person_id}/reset-password",
    response_model=LinkOut,
    responses=responses(401, 403, 404, 409, 422),
)
def reset_password(
    person_id: PersonId,
    supervisor: SupervisorDep,
    services: ServicesDep,
    request: Request,
    response: Response,
) -> Any:
    """Clears the person's password, ends their sessions and answers a new one-time link."""
    settings = services.settings
    if not settings.password_login:
        raise Forbidden("passwords are off (PASSWORD_LOGIN=false): people sign in elsewhere")
    with services.engine.begin() as conn:
        link = people.reset_password(
            conn, supervisor, person_id, address=address_of(request), base_url=settings.base_url
        )
    response.headers["Cache-Control"] = "no-store"
    return {"set_password_link": link}


@router.post(
    "/admin/people/{person_id}/sign-out",
    response_model=SignedOutOut,
    responses=responses(401, 403, 404, 422),
)
def sign_out_person(
    person_id: PersonId, supervisor: SupervisorDep, services: ServicesDep, request: Request
) -> Any:
    """Ends every session of the person at once."""
    with services.engine.begin() as conn:
        ended = people.sign_out_person(conn, supervisor, person_id, address=address_of(request))
    return {"sessions_ended": ended}


@router.get("/admin/tokens", response_model=TokensOut, responses=responses(401, 403))
def list_tokens(_: AdminDep, services: ServicesDep) -> Any:
    """Every API token, never its secret."""
    with services.engine.connect() as conn:
        return {"items": [t.view() for t in api_tokens.list_tokens(conn)]}


@router.post(
    "/admin/tokens",
    status_code=201,
    response_model=TokenCreated,
    responses=responses(401, 403, 422),
)
def create_token(
    body: TokenIn, admin: AdminDep, services: ServicesDep, request: Request, response: Response
) -> Any:
    """A new bearer token for a person; its secret is in this answer and nowhere else."""
    with services.engine.begin() as conn:
        record, secret = api_tokens.create_token(
            conn,
            admin,
            owner_id=body.agent_id,
            name=body.name,
            expires_at=body.expires_at,
            address=address_of(request),
        )
    response.headers["Cache-Control"] = "no-store"  # the token is shown once
    return {**record.view(), "token": secret}


@router.delete(
    "/admin/tokens/{token_id}", response_model=TokenOut, responses=responses(401, 403, 404, 422)
)
def revoke_token(
    token_id: TokenId, admin: AdminDep, services: ServicesDep, request: Request
) -> Any:
    """Revoked at once: the next request with it is 401."""
    with services.engine.begin() as conn:
        return api_tokens.revoke_token(conn, admin, token_id, address=address_of(request)).view()
