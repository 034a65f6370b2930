"""Engines, sessions and the declarative base shared by every owned table."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, MetaData, create_engine
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

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


def create_store_engine(settings: Settings, *, pool_size: int | None = None) -> Engine:
    """The service's own PostgreSQL. Statements are bounded: a stuck lock cannot hang a worker."""
    return create_engine(
        settings.require_database(),
        pool_size=pool_size or settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # A pooled connection is checked before use, so a database restart or failover costs
        # no request and no population: one cheap round trip per checkout.
        pool_pre_ping=True,
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


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False, autoflush=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """Unit of work for the CLI and background jobs: commit on success, roll back on any error."""
    with factory() as session, session.begin():
        yield session
