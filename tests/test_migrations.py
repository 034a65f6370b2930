"""Migrations and models agree, migrations go down and up again, and the offline SQL a DBA pipes
into psql builds the same schema (SPEC 2, 6)."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import make_url

from app.health import MIGRATIONS_DIR, alembic_config, schema_head
from app.models import metadata
from app.queues.kinds import KINDS, SWAP_LOCK_KEY
from migrations import sqlfiles
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


def installed(url: str) -> dict[str, tuple[str, str]]:
    """Our functions and views in the database: name -> (kind, body as PostgreSQL keeps it)."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            functions = conn.execute(
                text(
                    "SELECT p.proname, p.prosrc FROM pg_proc p"
                    " JOIN pg_namespace n ON n.oid = p.pronamespace"
                    " WHERE n.nspname = 'public' AND p.proname LIKE 'cq\\_%'"
                )
            ).all()
            views = conn.execute(
                text(
                    "SELECT viewname, definition FROM pg_views"
                    " WHERE schemaname = 'public' AND viewname LIKE 'cq\\_%'"
                )
            ).all()
    finally:
        engine.dispose()
    return {
        **{name: ("FUNCTION", body) for name, body in functions},
        **{name: ("VIEW", body) for name, body in views},
    }


def test_upgrade_head_installs_exactly_the_current_sql_files(fresh_database: str) -> None:
    """migrations/sql/ is where a reader finds the claim functions (sqlfiles.CURRENT, one file
    each): what `alembic upgrade head` installs is exactly those, no more, and each function's
    body is the file's. A migration that changes a function without updating CURRENT, or a file
    edited without a migration, fails here."""
    alembic(fresh_database, "upgrade", "head")
    found = installed(fresh_database)
    expected = {}
    for path in sqlfiles.current_files():
        kind, name = sqlfiles.defined(path)
        body = path.read_text()
        expected[name] = (kind, body.split("$$")[1] if kind == "FUNCTION" else None)
    assert set(found) == set(expected)
    for name, (kind, body) in expected.items():
        assert found[name][0] == kind, name
        if body is not None:
            assert found[name][1] == body, f"{name}: the database's text is not the file's"


def test_the_claim_functions_take_the_swap_locks_the_code_takes(store_engine: Engine) -> None:
    """The SQL names each queue's swap lock (pg_advisory_xact_lock(1667329132, n)) as
    app/queues/kinds.py does: otherwise a claim would wait for a lock the swap never takes."""
    for queue_type, kind in KINDS.items():
        with store_engine.begin() as conn:
            conn.execute(text("SELECT cq_swap_lock_shared(:q)"), {"q": str(queue_type)})
            held = conn.execute(
                text(
                    "SELECT classid::bigint, objid::bigint, objsubid, mode FROM pg_locks"
                    " WHERE locktype = 'advisory' AND pid = pg_backend_pid()"
                )
            ).all()
        # Two int4 keys: (classid, objid) with objsubid 2.
        assert held == [(SWAP_LOCK_KEY, kind.swap_lock_id, 2, "ShareLock")]


def test_every_migration_is_self_contained() -> None:
    """A migration never loads another (by path or import) nor reads another's SQL folder: what
    it does cannot change when someone edits a different migration."""
    for path in sorted((MIGRATIONS_DIR / "versions").glob("[0-9]*.py")):
        source = path.read_text()
        tree = ast.parse(source)
        revision = path.name.split("_", 1)[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom):
                names = [a.name for a in node.names]
                module = getattr(node, "module", None) or ""
                assert "importlib" not in names and not module.startswith("importlib"), path
                assert "versions" not in module, path
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                named = re.match(r"(\d{4})_\w+", node.value)
                if named:
                    assert named.group(1) == revision, f"{path.name} reads {node.value}"
        assert "spec_from_file_location" not in source and "exec_module" not in source, path
