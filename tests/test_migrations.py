"""Migrations and models agree, migrations go down and up again, and the offline SQL a DBA pipes
into psql builds the same schema (SPEC 2, 6)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.engine import make_url

from app.health import MIGRATIONS_DIR, alembic_config, schema_head
from app.models import metadata
from app.queues.kinds import KINDS, SWAP_LOCK_KEY
from tests import pg

ROOT = Path(__file__).resolve().parent.parent
OWNED_TABLES = {t.name for t in metadata.sorted_tables}


@pytest.fixture(scope="module")
def scratch_url(pg_server: str) -> Iterator[str]:
    name = f"cq_test_migrations_{os.getpid()}"
    yield pg.recreate_database(pg_server, name)
    admin = create_engine(pg_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def fresh_database(scratch_url: str) -> str:
    """An empty database: nothing in it, not even alembic_version."""
    engine = create_engine(scratch_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()
    assert tables(scratch_url) == set()
    return scratch_url


def alembic(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """The operator's command: ``alembic ...`` in the project directory with DATABASE_URL set."""
    env = {**os.environ, "DATABASE_URL": url}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [sys.executable, "-m", "alembic", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result


def version(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars())
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_upgrade_head_matches_the_models(fresh_database: str) -> None:
    url = fresh_database
    alembic(url, "upgrade", "head")

    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()

    assert diff == []
    assert version(url) == [schema_head()]
    assert tables(url) == OWNED_TABLES | {"alembic_version"}


def test_downgrade_to_base_and_back_up(fresh_database: str) -> None:
    url = fresh_database
    command.upgrade(alembic_config(url), "head")
    assert tables(url) == OWNED_TABLES | {"alembic_version"}

    alembic(url, "downgrade", "base")
    assert tables(url) == {"alembic_version"}
    assert version(url) == []

    alembic(url, "upgrade", "head")
    assert tables(url) == OWNED_TABLES | {"alembic_version"}
    assert version(url) == [schema_head()]


def test_offline_sql_builds_the_schema_with_psql(fresh_database: str) -> None:
    psql = shutil.which("psql")
    if psql is None:
        pytest.skip("psql is not installed")
    url = fresh_database

    sql = alembic(url, "upgrade", "head", "--sql").stdout
    assert "CREATE TABLE unsigned_users_queue" in sql
    target = make_url(url)
    applied = subprocess.run(
        [
            psql,
            "--no-psqlrc",
            "--quiet",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            target.host or "127.0.0.1",
            "-p",
            str(target.port or 5432),
            "-U",
            target.username or "postgres",
            "-d",
            target.database or "",
        ],
        input=sql,
        env={**os.environ, "PGPASSWORD": target.password or ""},
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert applied.returncode == 0, applied.stderr
    assert tables(url) == OWNED_TABLES | {"alembic_version"}
    assert version(url) == [schema_head()]
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(conn, opts={"compare_type": True}), metadata
            )
    finally:
        engine.dispose()
    assert diff == []


def test_the_claim_functions_know_the_queues_as_the_code_does() -> None:
    """Migration 0004 freezes each queue's table, swap lock id and detail columns into its
    functions; app/queues/kinds.py must agree, or claims and swaps would take different locks."""
    [path] = (MIGRATIONS_DIR / "versions").glob("*_claim_functions.py")
    spec = importlib.util.spec_from_file_location("claim_functions", path)
    assert spec is not None and spec.loader is not None
    migration = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(migration)
    frozen = {
        queue: (table, lock_id, tuple(details))
        for queue, (table, lock_id, details) in migration.QUEUES.items()
    }
    assert frozen == {
        str(q): (kind.table, kind.swap_lock_id, kind.detail_columns) for q, kind in KINDS.items()
    }
    assert migration.SWAP_NS == SWAP_LOCK_KEY
