"""Engines, sessions and the declarative base shared by every owned table."""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
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
    return engine


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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Unit of work for the CLI and background jobs: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session


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
