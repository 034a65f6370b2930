"""app.statements: the hot statements run on the driver's cursor must behave as SQLAlchemy's
execution would: transactions that commit, errors that are SQLAlchemy's (without parameters),
disconnects that invalidate, and a connection that serves again after an error."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import (
    Engine,
    Text,
    TypeDecorator,
    bindparam,
    create_engine,
    literal_column,
    select,
    text,
)
from sqlalchemy.exc import DataError, DBAPIError, StatementError

from app.statements import Statement

SECRET = "s3cr3t-value-never-in-errors"


@pytest.fixture
def engine(store_url: str) -> Iterator[Engine]:
    engine = create_engine(store_url, pool_size=1, max_overflow=0, hide_parameters=True)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS statement_probe (v int NOT NULL)"))
        conn.execute(text("TRUNCATE statement_probe"))
    yield engine
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE statement_probe"))
    engine.dispose()


INSERT = Statement("INSERT INTO statement_probe (v) VALUES (:v) RETURNING v")
COUNT = Statement("SELECT count(*) AS n FROM statement_probe")


def test_rows_by_label_with_literal_percent_signs(engine: Engine) -> None:
    statement = Statement("SELECT :a AS a, 'x%' AS pct, 1 + CAST(:b AS int) AS b")
    with engine.connect() as conn:
        row = statement.one(conn, {"a": "left", "b": 2})
        assert (row.a, row.pct, row.b) == ("left", "x%", 3)
        assert statement.scalar(conn, {"a": "again", "b": 0}) == "again"
        assert Statement("SELECT 1 AS one WHERE false").one_or_none(conn) is None


def test_a_commit_after_driver_statements_persists_them(engine: Engine) -> None:
    """The driver began the transaction; SQLAlchemy must know, or commit() would do nothing and
    the pool's reset on return would roll the insert back."""
    with engine.connect() as conn:
        assert INSERT.scalar(conn, {"v": 1}) == 1
        conn.commit()
        INSERT.all(conn, {"v": 2})
        conn.rollback()
    with engine.connect() as conn:
        assert COUNT.scalar(conn) == 1


def test_an_error_is_sqlalchemys_without_parameters_and_the_connection_serves_again(
    engine: Engine,
) -> None:
    bad = Statement("SELECT CAST(:secret AS text) AS s, 1 / CAST(:zero AS int) AS v")
    with engine.connect() as conn:
        with pytest.raises(DataError) as caught:
            bad.one(conn, {"secret": SECRET, "zero": 0})
        assert SECRET not in str(caught.value)
        assert not caught.value.connection_invalidated
        conn.rollback()
        # The same pooled connection (pool_size=1): its kept cursor was closed by the error
        # handling and is replaced.
        assert INSERT.scalar(conn, {"v": 7}) == 7
        conn.commit()
    with engine.connect() as conn:
        assert COUNT.scalar(conn) == 1


def test_a_dropped_connection_is_invalidated_and_replaced(engine: Engine, store_url: str) -> None:
    admin = create_engine(store_url)
    with engine.connect() as conn:
        pid = Statement("SELECT pg_backend_pid() AS pid").scalar(conn)
        conn.commit()
        with admin.begin() as killer:
            killer.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(DBAPIError) as caught:
            COUNT.scalar(conn)
        assert caught.value.connection_invalidated
    admin.dispose()
    with engine.connect() as conn:
        assert Statement("SELECT pg_backend_pid() AS pid").scalar(conn) != pid
        assert COUNT.scalar(conn) == 0


def test_a_statement_sqlalchemy_must_process_runs_through_sqlalchemy(engine: Engine) -> None:
    expanding = Statement(
        text("SELECT x FROM generate_series(1, 5) AS x WHERE x IN :ids ORDER BY x").bindparams(
            bindparam("ids", expanding=True)
        )
    )
    with engine.connect() as conn:
        assert [row.x for row in expanding.all(conn, {"ids": [2, 4, 9]})] == [2, 4]


class Shouted(TypeDecorator[str]):
    """A type with a result processor: its values must come back processed."""

    impl = Text
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> Any:
        return None if value is None else value.upper()


def test_a_column_with_a_result_processor_runs_through_sqlalchemy(engine: Engine) -> None:
    statement = Statement(select(literal_column("'quiet'", Shouted).label("word")))
    with engine.connect() as conn:
        assert statement.scalar(conn) == "QUIET"


def test_columns_sharing_a_label_are_refused(engine: Engine) -> None:
    """Rows are read by label: a second column with the same label would shadow the first."""
    with engine.connect() as conn, pytest.raises(StatementError, match="share labels"):
        Statement("SELECT 1 AS a, 2 AS a").one(conn)
