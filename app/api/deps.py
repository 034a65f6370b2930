"""Request dependencies: the process's services, authentication and the flags in force.

Authentication happens here and only here: ``current_agent`` turns the bearer token into an
``AgentIdentity``, and routes hand services that identity, never the token. The same round trip
reads the supervisors' flag overrides, which ``current_flags`` turns into the flags in force for
this request (so a change applies on every process's next request at no extra cost).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hmac
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Annotated, ParamSpec, TypeVar

from fastapi import Depends, Path, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param
from sqlalchemy import Connection, Engine

from app.agents import AgentIdentity, Authenticated, authenticate
from app.errors import Forbidden, NotFound, Unauthorized
from app.flags import Flags
from app.queues.kinds import QueueType
from app.rules.calling import CallingWindow
from app.services import Services

bearer = HTTPBearer(auto_error=False)


class BearerToken(SecurityBase):
    """The bearer token as a string, or None: HTTPBearer's parsing and its OpenAPI scheme,
    without building a pydantic model on every request of the dashboards' routes."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel()
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> str | None:
        scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
        return token if token and scheme.lower() == "bearer" else None


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
    secret = services.settings.cron_secret
    if credentials is None or secret is None:
        raise Unauthorized("a valid cron bearer token is required")
    expected = secret.get_secret_value().encode()
    if not hmac.compare_digest(credentials.credentials.encode(), expected):
        raise Unauthorized("a valid cron bearer token is required")


class RequestDb:
    """The request's store connection, in autocommit: a pool checkout taken by the first to need
    it and given back as soon as that step is done (``release``), so a request never holds a
    pooled connection while it waits for another one. (Holding the authentication's connection
    for the whole request did exactly that: a route that opens its own connection with the
    first still checked out starves the pool under concurrency, every request holding one and
    waiting for a second.) Authentication releases it at once; the claim and the outcome take
    it again on their worker thread (``run``): giving a connection back to the pool and taking
    it again is no I/O (no pre-ping; an autocommit connection needs no reset)."""

    __slots__ = ("_engine", "conn")

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.conn: Connection | None = None

    def connection(self) -> Connection:
        """Blocking the first time (a pool checkout): call it on a worker thread."""
        if self.conn is None:
            self.conn = self._engine.connect()
        return self.conn

    def release(self) -> None:
        """Back to the pool. Blocking when a transaction was left open (the rollback): call it
        on a worker thread."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def run(self, fn: Callable[..., T], *args: object, **kwargs: object) -> T:
        """``fn(*args, **kwargs, conn=<this connection>)``, then the connection back to the
        pool. On a worker thread."""
        try:
            return fn(*args, **kwargs, conn=self.connection())
        finally:
            self.release()


async def request_db(request: Request, services: ServicesDep) -> AsyncIterator[RequestDb]:
    db = RequestDb(services.autocommit)
    try:
        yield db
    finally:
        # Normally released already; after an error in between, closed here.
        conn = db.conn
        if conn is not None:
            if conn.in_transaction() or conn.invalidated:
                # Rolling back is a round trip: not on the event loop.
                await in_thread(request, db.release)
            else:
                db.release()  # back to the pool: no I/O


RequestDbDep = Annotated[RequestDb, Depends(request_db)]

_AUTHENTICATED = "authenticated"


def _authenticate(db: RequestDb, token: str) -> Authenticated:
    return db.run(_authenticate_on, token)


def _authenticate_on(token: str, *, conn: Connection) -> Authenticated:
    return authenticate(conn, token)


async def current_agent(
    request: Request,
    db: RequestDbDep,
    token: Annotated[str | None, Depends(bearer_token)],
) -> AgentIdentity:
    """The calling agent. Missing, unknown or deactivated token: 401."""
    if token is None:
        raise Unauthorized("a valid agent bearer token is required")
    found = await in_thread(request, _authenticate, db, token)
    setattr(request.state, _AUTHENTICATED, found)
    return found.agent


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


def _authenticated(request: Request) -> Authenticated:
    found: Authenticated = getattr(request.state, _AUTHENTICATED)
    return found


async def current_flags(request: Request, services: ServicesDep, _: AgentDep) -> Flags:
    """The flags in force for this request, from the overrides read with the agent."""
    return services.flags_for(_authenticated(request).flag_overrides)


FlagsDep = Annotated[Flags, Depends(current_flags)]


async def current_window(request: Request, services: ServicesDep, _: AgentDep) -> CallingWindow:
    """The calling rules in force and the database's clock, read with the agent."""
    found = _authenticated(request)
    return CallingWindow(services.calling_rules_for(found.calling_rules), found.now)


WindowDep = Annotated[CallingWindow, Depends(current_window)]


async def require_supervisor(agent: AgentDep) -> AgentIdentity:
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
    """Blocking work on the thread pool the application keeps for it (``app.state.threads``),
    in the request's context (its request id for the logs). A sync route's or dependency's AnyIO
    hop (capacity limiter, worker hand-off, context copy) cost about 0.1 ms of CPU per request
    under load on the benchmark machine; the executor's hop about a third of that."""
    executor: Executor = request.app.state.threads
    context = contextvars.copy_context()
    call = functools.partial(context.run, fn, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(executor, call)
