"""Request dependencies: the process's services, authentication and the flags in force.

Authentication happens here and only here: ``current_agent`` (every route but two) and
``Dashboard.run`` (next-user and complete) turn the bearer token into an ``AgentIdentity`` with
``app.agents.authenticate`` and refuse a scorer's token with ``refuse_scorer``, and routes hand
services that identity, never the token. The same round trip
reads the supervisors' flag overrides and the calling rules, which ``Dashboard.run`` turns into
the flags and the calling window in force for this request (so a change applies on every
process's next request at no extra cost).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hmac
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Annotated, Concatenate, ParamSpec, TypeVar

from fastapi import Depends, Path, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param
from pydantic import SecretStr
from sqlalchemy import Connection, Engine

from app.agents import AgentIdentity, Authenticated, Holding, authenticate
from app.errors import Forbidden, NotFound, Unauthorized
from app.flags import Flags
from app.rules.calling import CallingWindow
from app.services import Services
from app.vocabulary import QueueType

bearer = HTTPBearer(auto_error=False)


class BearerToken(SecurityBase):
    """The bearer token as a string, or None: HTTPBearer's parsing and its OpenAPI scheme,
    without building a pydantic model on every request of the dashboards' routes."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel()
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> str | None:
        return bearer_of(request)


def bearer_of(request: Request) -> str | None:
    """The request's bearer token, as HTTPBearer parses it, or None."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    return token if token and scheme.lower() == "bearer" else None


def secret_matches(presented: str | None, secret: SecretStr | None) -> bool:
    """A presented bearer token against a configured secret, in constant time. With no secret
    configured, nothing matches."""
    if presented is None or secret is None:
        return False
    return hmac.compare_digest(presented.encode(), secret.get_secret_value().encode())


bearer_token = BearerToken()

P = ParamSpec("P")
T = TypeVar("T")


async def get_services(request: Request) -> Services:
    """Async on purpose (no I/O): a sync dependency costs a threadpool hop per request."""
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]
CredentialsDep = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def require_cron_secret(services: ServicesDep, credentials: CredentialsDep) -> None:
    """Bearer CRON_SECRET, compared in constant time. With no secret configured, nobody passes."""
    presented = credentials.credentials if credentials is not None else None
    if not secret_matches(presented, services.settings.cron_secret):
        raise Unauthorized("a valid cron bearer token is required")


def _authenticate(engine: Engine, token: str) -> Authenticated:
    """On a worker thread: one pool checkout (an idle autocommit connection: no I/O), one
    statement, the connection back."""
    with engine.connect() as conn:
        return authenticate(conn, token)


# Where the request's authenticated agent is kept: a route that takes a body authenticates before
# reading it (app.api.routing), and then again as FastAPI solves its dependencies.
_AGENT_KEY = "callqueue.agent"


async def current_agent(
    request: Request, token: Annotated[str | None, Depends(bearer_token)]
) -> AgentIdentity:
    """The calling agent. Missing, unknown or deactivated token: 401. Looked up once per
    request."""
    if token is None:
        raise Unauthorized("a valid agent bearer token is required")
    known: AgentIdentity | None = request.scope.get(_AGENT_KEY)
    if known is None:
        services: Services = request.app.state.services
        found = await in_thread(request, _authenticate, services.autocommit, token)
        known = request.scope[_AGENT_KEY] = found.agent
    return known


# -- the scorer role (SPEC 7.1): its token reaches PUT /api/scores and nothing else -------------


async def dashboard_user(
    agent: Annotated[AgentIdentity, Depends(current_agent)],
) -> AgentIdentity:
    """An agent or a supervisor: every route behind ``AgentDep`` (and ``SupervisorDep``). Async
    on purpose (no I/O): a sync dependency costs a threadpool hop per request."""
    return refuse_scorer(agent)


def refuse_scorer(agent: AgentIdentity) -> AgentIdentity:
    """The dashboards' routes are for agents and supervisors: a scorer's token gets 403."""
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


@dataclass(frozen=True, slots=True)
class Caller:
    """Who calls one of the dashboards' two hottest routes, and what is in force for them: the
    flags and the calling window of this request."""

    agent: AgentIdentity
    flags: Flags
    window: CallingWindow
    # The head of the agent's active assignment, read with the agent when the route asked for it
    # (complete), else None.
    holding: Holding | None


class Dashboard:
    """The one dependency of the dashboards' two hottest routes (next-user, complete).

    The request's work runs in ``run``, on one worker thread and one pooled connection: the
    authentication (the same statement and the same checks as ``AgentDep``: 401 for an unknown or
    deactivated token, 403 for a scorer), then the route's step with the ``Caller``. One thread
    hop and one pool checkout per request instead of two each (a dependency that authenticated in
    a hop of its own): alternating claim benchmark runs measured about a quarter more cycles per
    second, with less CPU per cycle in the workers and in PostgreSQL (README, Performance). The
    dependency itself only requires a bearer token; a request with one whose body or path fails
    validation is answered 422 before the token is checked (nothing is read or written for it
    either way).

    One dependency instead of six: FastAPI's cost per dependency and per sub-dependency is a
    large share of these routes' CPU (the claim benchmark, py-spy)."""

    __slots__ = ("_holding", "_services", "_token")

    def __init__(self, services: Services, token: str, holding: bool) -> None:
        self._services = services
        self._token = token
        self._holding = holding

    @property
    def services(self) -> Services:
        return self._services

    def run(
        self,
        step: Callable[Concatenate[Caller, Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        """On a worker thread: authenticate, then ``step(caller, conn, *args, **kwargs)`` on the
        same connection (in autocommit; the claim runs its attempts on it as transactions), which
        goes back to the pool afterwards (rolled back first if the step left a transaction
        open)."""
        services = self._services
        with services.autocommit.connect() as conn:
            found = authenticate(conn, self._token, holding=self._holding)
            caller = Caller(
                refuse_scorer(found.agent),
                services.flags_for(found.flag_overrides),
                CallingWindow(services.calling_rules_for(found.calling_rules), found.now),
                found.holding,
            )
            return step(caller, conn, *args, **kwargs)


class DashboardBearer(BearerToken):
    """The dependency: the bearer token's parsing and OpenAPI scheme (``BearerToken``), and a
    ``Dashboard`` for it in the same call (one dependency for FastAPI to resolve, not two). No
    token: 401 at once. Async on purpose (no I/O): the authentication is ``run``'s first
    statement.

    ``holding``: the authentication also reads the head of the agent's active assignment
    (``Caller.holding``). complete asks for it: the assignment it names is nearly always that
    one, and its head (user, queue, entry) is what a completion must know before it reads the
    replica, so the common completion needs no statement of its own to find it. One round trip
    less per cycle, measured in process (README, Performance)."""

    def __init__(self, *, holding: bool = False) -> None:
        super().__init__()
        self.holding = holding

    async def __call__(self, request: Request) -> Dashboard:  # type: ignore[override]
        token = await super().__call__(request)
        if token is None:
            raise Unauthorized("a valid agent bearer token is required")
        return Dashboard(request.app.state.services, token, self.holding)


dashboard = DashboardBearer()
dashboard_holding = DashboardBearer(holding=True)

DashboardDep = Annotated[Dashboard, Depends(dashboard)]
# complete's: the same, with the head of the assignment the agent holds.
HoldingDashboardDep = Annotated[Dashboard, Depends(dashboard_holding)]


async def require_supervisor(agent: AgentDep) -> AgentIdentity:
    if not agent.is_supervisor:
        raise Forbidden("this route is for supervisors")
    return agent


SupervisorDep = Annotated[AgentIdentity, Depends(require_supervisor)]


QUEUE_TYPES = [str(q) for q in QueueType]


def queue_type_of(value: str) -> QueueType:
    """Any value other than the two queue names is a 404, as for any unknown resource."""
    try:
        return QueueType(value)
    except ValueError:
        raise NotFound("there is no such queue") from None


async def queue_type_path(
    queue_type: Annotated[str, Path(json_schema_extra={"enum": QUEUE_TYPES})],
) -> QueueType:
    return queue_type_of(queue_type)


QueueTypeDep = Annotated[QueueType, Depends(queue_type_path)]


async def in_thread(request: Request, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Blocking work on the thread pool the application keeps for it (``app.state.threads``),
    in the request's context (its request id for the logs). A sync route's or dependency's AnyIO
    hop (capacity limiter, worker hand-off, context copy) cost about 0.1 ms of CPU per request
    under load on the benchmark machine; the executor's hop about a third of that."""
    executor: Executor = request.app.state.threads
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor, call)
