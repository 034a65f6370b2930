"""Alembic environment: the app's metadata and the app's DATABASE_URL, online or offline (--sql)."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool

from app.config import get_settings
from app.models import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_url() -> str:
    explicit = config.attributes.get("database_url")
    if explicit:
        return str(explicit)
    settings = get_settings()
    # Migrations bypass a transaction pooler (DATABASE_DIRECT_URL when set).
    return settings.direct_url or settings.require_database()


def run_migrations_offline() -> None:
    """Emit SQL for a DBA to review and pipe into psql; no connection is made."""
    url = config.attributes.get("database_url") or get_settings().database_url
    context.configure(
        url=url or "postgresql+psycopg://",
        dialect_name="postgresql",
        target_metadata=metadata,
        literal_binds=True,
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(database_url(), poolclass=pool.NullPool)
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


def _run(connection: object) -> None:
    context.configure(
        connection=connection,  # type: ignore[arg-type]
        target_metadata=metadata,
        compare_type=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
