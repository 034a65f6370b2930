"""Request dependencies: the process's services and authentication."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hmac
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Annotated, Any, ParamSpec, TypeVar

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param

from app.agents import AgentIdentity, authenticate
from app.errors import Forbidden, NotFound, Unauthorized
from app.queues.kinds import QueueType
from app.services import Services

bearer = HTTPBearer(auto_error=False)

P = ParamSpec("P")
T = TypeVar("T")


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
    """The agent's bearer token, not yet checked: a missing one is a 401 here (``current_agent``
    then checks it; next-user and complete use ``dashboard_token`` and check it in their own
    first statement, on the connection that does the work)."""
    if credentials is None:
        raise Unauthorized("a valid agent bearer token is required")
    return credentials.credentials


TokenDep = Annotated[str, Depends(bearer_token)]


async def dashboard_token(request: Request) -> str:
    """``bearer_token`` for the two routes every dashboard calls all day (next-user, complete):
    the header parsed as HTTPBearer parses it, without HTTPBearer's own nested dependency, each
    of which costs FastAPI a dependency resolution per request. The routes declare the bearer
    scheme in OpenAPI themselves (``BEARER_SECURITY``)."""
    scheme, credentials = get_authorization_scheme_param(request.headers.get("authorization"))
    if not credentials or scheme.lower() != "bearer":
        raise Unauthorized("a valid agent bearer token is required")
    return credentials


DashboardTokenDep = Annotated[str, Depends(dashboard_token)]
# What Depends(HTTPBearer()) adds to an operation's OpenAPI document.
BEARER_SECURITY: dict[str, Any] = {"security": [{"HTTPBearer": []}]}


def current_agent(services: ServicesDep, token: TokenDep) -> AgentIdentity:
    """Missing, unknown or deactivated token: 401."""
    with services.engine.connect() as conn:
        return authenticate(conn, token)


# -- the scorer role (SPEC 7.1): its token reaches PUT /api/scores and nothing else -------------


async def dashboard_user(
    agent: Annotated[AgentIdentity, Depends(current_agent)],
) -> AgentIdentity:
    """An agent or a supervisor: every route behind ``AgentDep`` (and ``SupervisorDep``). Async
    on purpose (no I/O): a sync dependency costs a threadpool hop per request."""
    if agent.role == "scorer":
        raise Forbidden("a scorer's token is for PUT /api/scores only")
    return agent


async def require_scorer(
    agent: Annotated[AgentIdentity, Depends(current_agent)],
) -> AgentIdentity:
    """PUT /api/scores: the upstream scorer, or a supervisor; agents get 403."""
    if agent.role not in ("scorer", "supervisor"):
        raise Forbidden("this route is for scorers and supervisors")
    return agent


ScorerDep = Annotated[AgentIdentity, Depends(require_scorer)]

# ---------------------------------------------------------------------------------------------

AgentDep = Annotated[AgentIdentity, Depends(dashboard_user)]


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


async def in_thread(request: Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Blocking work of the dashboards' hottest routes, on the thread pool the application keeps
    for them (``app.state.dashboard_threads``), in the request's context (its request id for the
    logs). A sync route's AnyIO hop (capacity limiter, worker hand-off, context copy) cost about
    0.1 ms of CPU per request under load on the benchmark machine; the executor's hop about a
    third of that."""
    executor: Executor = request.app.state.dashboard_threads
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor, call)
