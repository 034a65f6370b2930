"""Engines, sessions and the declarative base shared by every owned table."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import ConnectionPoolEntry

from app.config import Settings

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


def create_store_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """The service's own PostgreSQL. Statements are bounded: a stuck lock cannot hang a worker."""
    engine = create_engine(
        settings.require_database(),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=1800,
        # Errors never carry statement parameters into logs or reports.
        hide_parameters=True,
        connect_args={
            "connect_timeout": 5,
            "application_name": "callqueue",
            # UTC sessions: times are stored and returned in UTC whatever the server's zone.
            # No statement waits on a lock for more than 5 s (the refresh swap allows itself
            # 15 s with SET LOCAL); callers answer 503 with Retry-After instead of hanging.
            "options": "-c statement_timeout=60000 -c idle_in_transaction_session_timeout=120000"
            " -c lock_timeout=5000 -c timezone=UTC",
        },
    )
    ping_when_idle(engine, PING_AFTER_IDLE_SECONDS)
    log_slow_statements(engine, settings.slow_statement_ms)
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
