"""Request dependencies: the process's services and authentication."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.agents import AgentIdentity, authenticate
from app.errors import Forbidden, NotFound, Unauthorized
from app.queues.kinds import QueueType
from app.services import Services

bearer = HTTPBearer(auto_error=False)


async def get_services(request: Request) -> Services:
    """Async on purpose (no I/O): a sync dependency costs a threadpool hop per request."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def require_cron_secret(
    services: ServicesDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> None:
    """Bearer CRON_SECRET, compared in constant time. With no secret configured, nobody passes."""
    secret = services.settings.cron_secret
    if credentials is None or secret is None:
        raise Unauthorized("a valid cron bearer token is required")
    expected = secret.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("a valid cron bearer token is required")


async def bearer_token(
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> str:
    """The agent's bearer token, not yet checked: a missing one is a 401 here. The dashboards'
    hottest routes check it in their own first statement, on the connection that does the work."""
    if credentials is None:
        raise Unauthorized("a valid agent bearer token is required")
    return credentials.credentials


TokenDep = Annotated[str, Depends(bearer_token)]


def current_agent(services: ServicesDep, token: TokenDep) -> AgentIdentity:
    """Missing, unknown or deactivated token: 401."""
    with services.engine.connect() as conn:
        return authenticate(conn, token)


AgentDep = Annotated[AgentIdentity, Depends(current_agent)]


def require_supervisor(agent: AgentDep) -> AgentIdentity:
    if not agent.is_supervisor:
        raise Forbidden("this route is for supervisors")
    return agent


SupervisorDep = Annotated[AgentIdentity, Depends(require_supervisor)]


async def queue_type_path(
    queue_type: Annotated[str, Path(json_schema_extra={"enum": [str(q) for q in QueueType]})],
) -> QueueType:
    """Any value other than the two queue names is a 404, as for any unknown resource."""
    try:
        return QueueType(queue_type)
    except ValueError:
        raise NotFound("there is no such queue") from None


QueueTypeDep = Annotated[QueueType, Depends(queue_type_path)]
