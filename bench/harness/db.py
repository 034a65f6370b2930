"""Scratch databases on the bench server (``--server``, an admin URL): create, vacuum, drop."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def db_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same URL for psycopg itself (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def admin(server: str, statements: list[str]) -> None:
    """Each statement in autocommit (CREATE DATABASE, VACUUM and CHECKPOINT need it)."""
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def database_exists(server: str, name: str) -> bool:
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}
            ).first()
        return found is not None
    finally:
        engine.dispose()


def recreate_database(server: str, name: str) -> str:
    admin(server, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'])
    return db_url(server, name)


def drop_databases(server_url: str, dbs: tuple[str, ...]) -> None:
    admin(server_url, [f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)' for db in dbs])


def maintain(url: str, tables: str | None = None, *, checkpoint: bool = True) -> None:
    """VACUUM (this server runs with autovacuum off) and CHECKPOINT, so each phase starts even."""
    statements = [f"VACUUM (ANALYZE) {tables}" if tables else "VACUUM (ANALYZE)"]
    if checkpoint:
        statements.append("CHECKPOINT")
    admin(url, statements)


def table_stats(
    conn: psycopg.Connection[Any], tables: tuple[str, ...]
) -> dict[str, tuple[int, int]]:
    """(n_live_tup, n_dead_tup) per table from pg_stat_user_tables (as of the last stats flush),
    read on an autocommit connection to the database (kept open: the server may be full)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        (list(tables),),
    ).fetchall()
    found = {r[0]: (int(r[1]), int(r[2])) for r in rows}
    return {t: found.get(t, (0, 0)) for t in tables}


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    """Prints ``label ... N s`` around a setup step."""
    t0 = time.perf_counter()
    print(f"  {label} ...", end="", flush=True)
    yield
    print(f" {time.perf_counter() - t0:.1f} s", flush=True)
