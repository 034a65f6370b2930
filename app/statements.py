"""Fixed statements run on the driver's own cursor: the dashboards' hottest path.

next-user and complete run four to six statements each, all day, from every agent. SQLAlchemy
Core's execution path (an execution context, parameter processing, result metadata rebuilt from
the cursor's description, Row objects) costs about 0.25 ms of CPU per statement on the 2-core
benchmark machine, more than psycopg's own work for the same statement (``bench/claims.py``
measures both; the README has the figures). These statements are fixed text with plain
parameters, so there is nothing for SQLAlchemy to process on the way in or out: each is compiled
once per dialect and then run straight on the pooled connection's DBAPI cursor.

What stays SQLAlchemy's: the pool and its events, the Connection and its transaction (a statement
marks the transaction begun, so ``commit()`` and ``rollback()`` keep working), and errors: a
driver error is raised as SQLAlchemy's ``DBAPIError`` and a disconnect invalidates the pool, as
``Connection.execute`` would. A statement that needs SQLAlchemy's processing (an expanding
``IN``, a typed parameter with a bind processor, a column with a result processor) is run
through ``Connection.execute`` instead, with the same result.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ClauseElement, Connection, Dialect, text
from sqlalchemy.sql.compiler import Compiled

Params = Mapping[str, Any]


class Statement:
    """A row-returning statement (SELECT, or DML with RETURNING) run on the driver's cursor.

    Rows are named tuples: attribute access by column label, as with SQLAlchemy's Row.
    """

    __slots__ = ("_row", "_sql", "clause")

    def __init__(self, clause: str | ClauseElement) -> None:
        self.clause: ClauseElement = text(clause) if isinstance(clause, str) else clause
        # Per (dialect, driver): the driver's SQL, or None when SQLAlchemy must run it.
        self._sql: dict[tuple[str, str], str | None] = {}
        self._row: Any = None

    def __repr__(self) -> str:
        return f"Statement({str(self.clause)[:60]!r})"

    def all(self, conn: Connection, params: Params | None = None) -> list[Any]:
        sql = self._driver_sql(conn.dialect)
        if sql is None:
            return list(conn.execute(self.clause, dict(params or {})))  # type: ignore[call-overload]
        if not conn.in_transaction():
            # The driver begins a transaction implicitly (unless in autocommit); SQLAlchemy must
            # know, or a later conn.commit() would do nothing.
            conn.begin()
        cursor = None
        try:
            cursor = _cursor(conn)
            # Always a mapping, even empty: the driver then unescapes the compiled "%%".
            cursor.execute(sql, params if params is not None else {})
            rows = cursor.fetchall()
            if self._row is None:
                self._row = _row_type([d[0] for d in cursor.description])
        except BaseException as exc:
            # Wraps the driver's error as Connection.execute does (DBAPIError subclasses, hidden
            # parameters) and, on a disconnect or an interruption (KeyboardInterrupt, a
            # cancelled greenlet), invalidates this connection and, on a disconnect, the pool's
            # older ones; it always raises.
            conn._handle_dbapi_exception(exc, sql, params, cursor, None)
        make = self._row._make
        return [make(row) for row in rows]

    def one_or_none(self, conn: Connection, params: Params | None = None) -> Any:
        rows = self.all(conn, params)
        if len(rows) > 1:
            raise ValueError(f"{self!r} returned {len(rows)} rows, expected at most one")
        return rows[0] if rows else None

    def one(self, conn: Connection, params: Params | None = None) -> Any:
        row = self.one_or_none(conn, params)
        if row is None:
            raise ValueError(f"{self!r} returned no row, expected one")
        return row

    def scalar(self, conn: Connection, params: Params | None = None) -> Any:
        row = self.one_or_none(conn, params)
        return None if row is None else row[0]

    def _driver_sql(self, dialect: Dialect) -> str | None:
        key = (dialect.name, dialect.driver)
        try:
            return self._sql[key]
        except KeyError:
            pass
        compiled = self.clause.compile(dialect=dialect)
        sql = compiled.string if _plain(compiled, dialect) else None
        self._sql[key] = sql
        return sql


def _row_type(labels: list[str]) -> Any:
    """Rows are read by label: two columns with one label would make one of them unreachable."""
    if len(set(labels)) != len(labels):
        raise ValueError(f"a statement's columns share labels: {sorted(labels)}")
    return namedtuple("Row", labels, rename=True)


_CURSOR = "app.statements.cursor"


def _cursor(conn: Connection) -> Any:
    """One cursor per pooled DBAPI connection, kept in the pool's per-connection ``info``: a new
    psycopg cursor copies the connection's adapters map, a cost paid per statement otherwise.
    A cursor closed after an error (SQLAlchemy's error handling closes it), or whose connection
    was replaced (an invalidated one), is not reused. pymysql forgets the connection on close."""
    dbapi = conn.connection.dbapi_connection
    info = conn.info
    cursor = info.get(_CURSOR)
    if cursor is None or cursor.connection is not dbapi or getattr(cursor, "closed", False):
        cursor = info[_CURSOR] = dbapi.cursor()  # type: ignore[union-attr]
    return cursor


def _plain(compiled: Compiled, dialect: Dialect) -> bool:
    """Named ``%(name)s`` parameters passed through untouched, and values returned as the
    driver gives them: what SQLAlchemy would have done anyway. Anything else (an expanding
    ``IN``, a bind processor, a result processor such as MySQL's integer-to-bool for Boolean
    columns) is left to SQLAlchemy."""
    if dialect.paramstyle != "pyformat":
        return False
    if (
        getattr(compiled, "post_compile_params", None)
        or getattr(compiled, "literal_execute_params", None)
        or getattr(compiled, "_bind_processors", None)
    ):
        return False
    return not any(
        column.type.dialect_impl(dialect).result_processor(dialect, None)
        for column in getattr(compiled, "_result_columns", ())
    )
