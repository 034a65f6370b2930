"""Engines, sessions and the declarative base shared by every owned table."""

from __future__ import annotations

import logging
import re
import socket
import time
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.exc import DisconnectionError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry, NullPool

from app.config import Settings

log = logging.getLogger(__name__)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


# A pooled connection idle for longer than this is pinged before use.
PING_AFTER_IDLE_SECONDS = 5.0

# The bounds every store session runs under (pg_settings units: milliseconds). UTC sessions:
# times are stored and returned in UTC whatever the server's zone. No statement waits on a lock
# for more than 5 s (the refresh swap allows itself 15 s with SET LOCAL); callers answer 503
# with Retry-After instead of hanging.
SESSION_BOUNDS_MS = {
    "statement_timeout": 60_000,
    "lock_timeout": 5_000,
    "idle_in_transaction_session_timeout": 120_000,
}
UTC_NAMES = ("UTC", "Etc/UTC", "UCT", "Etc/UCT", "Zulu", "Etc/Zulu")


class SessionBoundsMissing(SQLAlchemyError):
    """A store connection whose server session lacks the bounds: a pooler that does not set them
    on its server connections, or one that dropped the startup parameter carrying them (see the
    README, "PgBouncer")."""


# Sent in a direct session's ``options`` startup parameter, beside the bounds: a connection that
# comes up without it went through something that dropped the parameter (a pooler configured
# with ``ignore_startup_parameters = options``), and is treated as pooled.
STARTUP_MARKER = ("callqueue.startup", "options")


def keepalive_args(dead_peer_seconds: int) -> dict[str, int]:
    """libpq's client-side dead-peer detection: keepalive probes after half the bound of
    silence, then probes until the bound is spent; and ``tcp_user_timeout`` for data sent and
    never acknowledged (a peer that vanished mid-request), which keepalives do not cover."""
    idle, interval, count = keepalive_timing(dead_peer_seconds)
    return {
        "keepalives": 1,
        "keepalives_idle": idle,
        "keepalives_interval": interval,
        "keepalives_count": count,
        "tcp_user_timeout": dead_peer_seconds * 1000,
    }


def keepalive_timing(dead_peer_seconds: int) -> tuple[int, int, int]:
    """(idle, interval, count) such that idle + interval * count is about the bound."""
    idle = max(1, dead_peer_seconds // 2)
    interval = max(1, dead_peer_seconds // 10)
    count = max(1, (dead_peer_seconds - idle) // interval)
    return idle, interval, count


def set_tcp_keepalive(sock: socket.socket, dead_peer_seconds: int) -> None:
    """The options of ``keepalive_args`` on a socket the driver opened itself (pymysql). Only
    TCP sockets: a unix socket has no peer host to lose."""
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle, interval, count = keepalive_timing(dead_peer_seconds)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, count)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, dead_peer_seconds * 1000)


def server_options(dead_peer_seconds: int, **extra: str | int) -> str:
    """The ``options`` startup parameter of a direct session: the session bounds, and the
    server's own keepalives towards us, so a backend whose client host vanished ends (and frees
    its locks) in about ``dead_peer_seconds`` instead of the kernel's two hours."""
    idle, interval, count = keepalive_timing(dead_peer_seconds)
    settings: dict[str, str | int] = {
        **SESSION_BOUNDS_MS,
        "timezone": "UTC",
        "tcp_keepalives_idle": idle,
        "tcp_keepalives_interval": interval,
        "tcp_keepalives_count": count,
        "tcp_user_timeout": dead_peer_seconds * 1000,
        STARTUP_MARKER[0]: STARTUP_MARKER[1],
        **extra,
    }
    return " ".join(f"-c {name}={value}" for name, value in settings.items())


def store_connect_args(settings: Settings, *, pooled: bool) -> dict[str, Any]:
    args: dict[str, Any] = {
        "connect_timeout": 5,
        "application_name": "callqueue",
        **keepalive_args(settings.dead_peer_timeout_seconds),
    }
    if pooled:
        # PgBouncer in transaction mode hands each transaction whichever server connection is
        # free: psycopg's server-side prepared statements (made after 5 executions of a query)
        # would be missing there, or clash with another client's of the same name. And it
        # refuses the ``options`` startup parameter: the bounds come from the pooler's server
        # connections instead (checked on connect, see require_session_bounds).
        args["prepare_threshold"] = None
    else:
        args["options"] = server_options(settings.dead_peer_timeout_seconds)
    return args


def create_store_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """The service's own PostgreSQL. Statements are bounded: a stuck lock cannot hang a worker."""
    pooled = settings.transaction_pooling
    engine = create_engine(
        settings.require_database(),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=1800,
        # Errors never carry statement parameters into logs or reports.
        hide_parameters=True,
        connect_args=store_connect_args(settings, pooled=pooled),
    )
    ping_when_idle(engine, PING_AFTER_IDLE_SECONDS)
    log_slow_statements(engine, settings.slow_statement_ms)
    require_session_bounds(engine, pooled=pooled)
    return engine


def log_slow_statements(engine: Engine, threshold_ms: int) -> None:
    """Log every statement that took longer than ``threshold_ms`` (0 disables): its first line
    and duration, never its parameters. Through SQLAlchemy's cursor events, which the hot
    statements run on the driver's cursor fire too (app.statements)."""
    if threshold_ms <= 0:
        return
    threshold = threshold_ms / 1000
    slow_log = logging.getLogger("app.db.slow")

    @event.listens_for(engine, "before_cursor_execute")
    def _started(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, *_: Any
    ) -> None:
        if context is not None:
            context.cq_started = time.perf_counter()

    @event.listens_for(engine, "after_cursor_execute")
    def _finished(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, *_: Any
    ) -> None:
        started = getattr(context, "cq_started", None)
        if started is None:
            return
        took = time.perf_counter() - started
        if took >= threshold:
            slow_log.warning(
                "db.slow_statement",
                extra={
                    "duration_ms": round(took * 1000, 1),
                    "statement": statement.strip().splitlines()[0][:200],
                },
            )


def create_direct_engine(settings: Settings) -> Engine:
    """Connections that bypass a transaction pooler (DATABASE_DIRECT_URL, default DATABASE_URL),
    for work that needs a session: the population's advisory lock. Not pooled: one is opened
    per population run."""
    url = settings.direct_url or settings.require_database()
    return create_engine(
        url,
        poolclass=NullPool,
        hide_parameters=True,
        connect_args=store_connect_args(settings, pooled=False),
    )


# The session settings every store connection must carry (the bounds and the time zone), and
# whether the startup options arrived.
_BOUNDS_QUERY = (
    "SELECT name, setting FROM pg_settings WHERE name IN ({}) UNION ALL"
    " SELECT '{}', current_setting('{}', true)".format(
        ", ".join(f"'{name}'" for name in (*SESSION_BOUNDS_MS, "TimeZone")),
        STARTUP_MARKER[0],
        STARTUP_MARKER[0],
    )
)


def missing_session_bounds(settings_in_force: dict[str, str]) -> list[str]:
    """The bounds a server session lacks: each timeout must be set, and no looser than ours."""
    missing = []
    for name, limit in SESSION_BOUNDS_MS.items():
        value = int(settings_in_force.get(name, "0") or 0)
        if not 0 < value <= limit:
            missing.append(f"{name} (want {limit} ms, found {value})")
    if settings_in_force.get("TimeZone") not in UTC_NAMES:
        missing.append(f"TimeZone (want UTC, found {settings_in_force.get('TimeZone')})")
    return missing


def require_session_bounds(engine: Engine, *, pooled: bool) -> None:
    """Every new store connection checks that its session carries the bounds, whatever the
    settings say: one round trip when the pool grows, nothing per transaction. A connection
    without them is refused, so requests answer 503 and /readyz says not ready (and the server
    will not start), with a message naming what is missing, instead of running unbounded.

    Direct, the bounds travel in the ``options`` startup parameter. Behind a transaction pooler
    they cannot: a session SET would leak to whoever gets the server connection next, and a ``SET
    LOCAL`` per transaction would miss the statements that run on their own (autocommit), such as
    a completion's; so the pooler's server connections must carry them (PgBouncer's
    ``connect_query``, or ``ALTER ROLE ... IN DATABASE ... SET``). A connection that was meant to
    be direct but came up without the startup options (STARTUP_MARKER missing) went through a
    pooler after all: it gets no server-side prepared statements, which a transaction pooler
    would hand to another client's session (``prepared statement "_pg3_1" does not exist``)."""

    @event.listens_for(engine, "connect")
    def _check(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(_BOUNDS_QUERY)
            found = {name: setting for name, setting in cursor.fetchall()}
        finally:
            cursor.close()
            dbapi_connection.rollback()
        options_arrived = found.get(STARTUP_MARKER[0]) == STARTUP_MARKER[1]
        if not options_arrived:
            dbapi_connection.prepare_threshold = None
        missing = missing_session_bounds(found)
        if not missing:
            return
        log.error("store.session_bounds_missing", extra={"missing": ", ".join(missing)})
        if pooled:
            cause = (
                "DATABASE_URL goes through a transaction pooler (DB_TRANSACTION_POOLING, or"
                " DATABASE_DIRECT_URL set to another connection) whose server sessions lack "
                + "; ".join(missing)
                + ": set them on the pooler's server connections (PgBouncer: connect_query) or"
                " for the role (ALTER ROLE ... SET); if DATABASE_URL reaches PostgreSQL"
                " directly, set DB_TRANSACTION_POOLING=false"
            )
        else:
            cause = (
                "the store's sessions lack "
                + "; ".join(missing)
                + ": the connection's startup options did not reach PostgreSQL (a pooler with"
                " ignore_startup_parameters = options?). Behind a transaction pooler, set"
                " DATABASE_DIRECT_URL to a connection that bypasses it and set the bounds on the"
                " pooler's server connections (PgBouncer: connect_query)"
            )
        raise SessionBoundsMissing(cause)


def ping_when_idle(engine: Engine, idle_seconds: float) -> None:
    """Check a pooled connection before use when it has sat idle, so a database restart or
    failover between two bursts costs no request and no population.

    ``pool_pre_ping`` would ping on every checkout: a round trip per request on the claim path,
    for connections that were in use a moment ago. A connection that breaks while busy is
    caught anyway: the statement fails, SQLAlchemy sees a disconnect and recycles every
    connection of the pool opened before it.
    """

    @event.listens_for(engine.pool, "checkin")
    def _checkin(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine.pool, "checkout")
    def _checkout(dbapi_connection: Any, record: ConnectionPoolEntry, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # The pool discards this connection and checks out another (a fresh one if needed).
            raise DisconnectionError(f"idle connection failed its ping: {exc}") from exc


def pg_int_array(values: Iterable[int]) -> str:
    """A PostgreSQL array literal of integers (``{1,2,3}``), for a parameter cast to an array
    type in the statement (``= ANY(CAST(:ids AS bigint[]))``).

    Bulk statements take thousands of ids a batch. psycopg dumps a Python list element by
    element, checking each against a regular expression for quoting: about 12 ms of CPU for
    10,000 integers, ten times the cost of this join. Every value goes through ``int()``, so
    nothing but digits reaches the literal."""
    return "{" + ",".join(map(str, map(int, values))) + "}"


def pg_array(values: Iterable[int | bool | str | None]) -> str:
    """``pg_int_array`` for columns with nulls, booleans or plain lower-case words (queue
    types); anything that would need quoting raises."""
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        elif isinstance(value, bool):
            items.append("t" if value else "f")
        elif isinstance(value, int):
            items.append(str(value))
        elif _WORD.fullmatch(value) and value != "null":  # unquoted NULL means null
            items.append(value)
        else:
            raise ValueError("pg_array takes integers, booleans and plain words only")
    return "{" + ",".join(items) + "}"


_WORD = re.compile(r"[a-z_]+")
