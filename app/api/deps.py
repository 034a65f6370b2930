"""Request dependencies: the process's services, who is calling, and the flags in force.

Who is calling is decided here and only here (SPEC 8.2): the request's credential is a bearer
token (an API token) if it has one (an unknown one is 401, never a fallback to the cookie), else
the session cookie. ``current_agent`` (every route but two) and ``Dashboard.run`` (next-user and
complete) turn it into a person with ``app.auth.identity.authenticate``; routes hand services that
identity, never the credential. A request authenticated by the cookie with a method other than
GET, HEAD or OPTIONS must carry its session's CSRF token in ``X-CSRF-Token`` and, when the browser
sends an ``Origin``, come from ``PUBLIC_URL``'s: checked before anything is read. The same round
trip as the authentication reads the supervisors' flag overrides and the calling rules, which
``Dashboard.run`` turns into the flags and the calling window in force for this request (so a
change applies on every process's next request at no extra cost).
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

from app.auth.identity import (
    REFUSED,
    AgentIdentity,
    Authenticated,
    Credential,
    Holding,
    Via,
    authenticate,
)
from app.auth.sessions import COOKIE
from app.auth.tokens import csrf_token, same
from app.config import Settings
from app.errors import CsrfRejected, Forbidden, NotFound, Unauthorized
from app.flags import Flags
from app.rules.calling import CallingWindow
from app.services import Services
from app.vocabulary import QueueType

bearer = HTTPBearer(auto_error=False)


class CredentialReader(SecurityBase):
    """The request's credential (``credential_of``) or None; documented as the bearer scheme,
    which machines use (browsers carry the session cookie)."""

    def __init__(self) -> None:
        self.model = HTTPBearerModel()
        self.scheme_name = "HTTPBearer"

    async def __call__(self, request: Request) -> Credential | None:
        return credential_of(request)


def bearer_of(request: Request) -> str | None:
    """The request's bearer token, as HTTPBearer parses it, or None."""
    scheme, token = get_authorization_scheme_param(request.headers.get("authorization"))
    return token if token and scheme.lower() == "bearer" else None


def credential_of(request: Request) -> Credential | None:
    """A bearer token if the request has one (never a fallback to the cookie after it), else
    the session cookie, else None."""
    token = bearer_of(request)
    if token is not None:
        return Credential(Via.TOKEN, token)
    cookie = request.cookies.get(COOKIE)
    return Credential(Via.SESSION, cookie) if cookie else None


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def check_csrf(request: Request, credential: Credential, settings: Settings) -> None:
    """A write authenticated by the session cookie carries the session's CSRF token and, when
    the browser says where it comes from, comes from the service's own origin. Checked before
    anything is read: the token is derived from the cookie itself."""
    if credential.via is not Via.SESSION or request.method in SAFE_METHODS:
        return
    if not same(request.headers.get("x-csrf-token"), csrf_token(credential.secret)):
        raise CsrfRejected("this request needs its session's X-CSRF-Token header (GET /api/me)")
    if not origin_allowed(request, settings):
        raise CsrfRejected("this request comes from another origin than the service's")


def origin_allowed(request: Request, settings: Settings) -> bool:
    """A browser's ``Origin`` (when it sends one) is PUBLIC_URL's. Without PUBLIC_URL (outside
    production, where it is required) it is the origin the request was sent to, by its Host
    header: a laptop's console works at http://localhost:8000 as at http://127.0.0.1:8000."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    if settings.public_url is not None:
        return origin == settings.public_origin
    host = request.headers.get("host")
    return host is not None and origin == f"{request.url.scheme}://{host}"


def secret_matches(presented: str | None, secret: SecretStr | None) -> bool:
    """A presented bearer token against a configured secret, in constant time. With no secret
    configured, nothing matches."""
    if presented is None or secret is None:
        return False
    return hmac.compare_digest(presented.encode(), secret.get_secret_value().encode())


credentials = CredentialReader()

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


def _authenticate(engine: Engine, credential: Credential, idle_minutes: int) -> Authenticated:
    """On a worker thread: one pool checkout (an idle autocommit connection: no I/O), one
    statement, the connection back."""
    with engine.connect() as conn:
        return authenticate(conn, credential, idle_minutes=idle_minutes)


# Where the request's authentication is kept: a route that takes a body authenticates before
# reading it (app.api.routing), and then again as FastAPI solves its dependencies.
_AUTHENTICATED = "callqueue.authenticated"


async def current_authenticated(
    request: Request, credential: Annotated[Credential | None, Depends(credentials)]
) -> Authenticated:
    """Who is calling, and how. No credential, or an unknown, expired, revoked, ended or
    deactivated one: 401; a cookie-authenticated write without its CSRF token: 403. Looked up
    once per request."""
    if credential is None:
        raise Unauthorized(REFUSED)
    services: Services = request.app.state.services
    check_csrf(request, credential, services.settings)
    known: Authenticated | None = request.scope.get(_AUTHENTICATED)
    if known is None:
        known = request.scope[_AUTHENTICATED] = await in_thread(
            request,
            _authenticate,
            services.autocommit,
            credential,
            services.settings.session_idle_minutes,
        )
    return known


async def current_agent(
    found: Annotated[Authenticated, Depends(current_authenticated)],
) -> AgentIdentity:
    """The calling person (see ``current_authenticated``)."""
    return found.agent


# -- the scorer role (SPEC 7.1): its token reaches PUT /api/scores and nothing else -------------


async def dashboard_user(
    agent: Annotated[AgentIdentity, Depends(current_agent)],
) -> AgentIdentity:
    """An agent or a supervisor: every route behind ``AgentDep`` (and ``SupervisorDep``). Async
    on purpose (no I/O): a sync dependency costs a threadpool hop per request."""
    return refuse_scorer(agent)


def refuse_scorer(agent: AgentIdentity) -> AgentIdentity:
    """The dashboards' routes are for people: a scorer's token gets 403."""
    if agent.role == "scorer":
        raise Forbidden("a scorer's token is for PUT /api/scores only")
    return agent


async def require_scorer(
    agent: Annotated[AgentIdentity, Depends(current_agent)],
) -> AgentIdentity:
    """PUT /api/scores: the upstream scorer, or a supervisor or an admin; agents get 403."""
    if agent.role not in ("scorer", "supervisor", "admin"):
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

    __slots__ = ("_credential", "_holding", "_services")

    def __init__(self, services: Services, credential: Credential, holding: bool) -> None:
        self._services = services
        self._credential = credential
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
            found = authenticate(
                conn,
                self._credential,
                idle_minutes=services.settings.session_idle_minutes,
                holding=self._holding,
            )
            caller = Caller(
                refuse_scorer(found.agent),
                services.flags_for(found.flag_overrides),
                CallingWindow(services.calling_rules_for(found.calling_rules), found.now),
                found.holding,
            )
            return step(caller, conn, *args, **kwargs)


class DashboardBearer(CredentialReader):
    """The dependency: the credential's reading and OpenAPI scheme (``CredentialReader``), the
    CSRF check of a cookie-authenticated write, and a ``Dashboard`` for it, in the same call (one
    dependency for FastAPI to resolve, not two). No credential: 401 at once. Async on purpose
    (no I/O): the authentication is ``run``'s first statement.

    ``holding``: the authentication also reads the head of the agent's active assignment
    (``Caller.holding``). complete asks for it: the assignment it names is nearly always that
    one, and its head (user, queue, entry) is what a completion must know before it reads the
    replica, so the common completion needs no statement of its own to find it. One round trip
    less per cycle, measured in process (README, Performance)."""

    def __init__(self, *, holding: bool = False) -> None:
        super().__init__()
        self.holding = holding

    async def __call__(self, request: Request) -> Dashboard:  # type: ignore[override]
        credential = credential_of(request)
        if credential is None:
            raise Unauthorized(REFUSED)
        services: Services = request.app.state.services
        check_csrf(request, credential, services.settings)
        return Dashboard(services, credential, self.holding)


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


async def require_admin(agent: AgentDep) -> AgentIdentity:
    if not agent.is_admin:
        raise Forbidden("this route is for admins")
    return agent


AdminDep = Annotated[AgentIdentity, Depends(require_admin)]
AuthenticatedDep = Annotated[Authenticated, Depends(current_authenticated)]


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
