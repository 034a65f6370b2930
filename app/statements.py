"""Fixed statements run on the driver's own cursor: the dashboards' hottest path.

next-user and complete run a handful of statements each, all day, from every agent. SQLAlchemy
Core's execution path (an execution context, parameter processing, result metadata rebuilt from
the cursor's description, Row objects) cost about 0.25 ms of CPU per statement on the 2-core
benchmark machine, more than psycopg's own work for the same statement (``bench/claims.py``
measures both). These statements are fixed SQL text with plain parameters, so there is nothing
for SQLAlchemy to process on the way in or out: on PostgreSQL through psycopg each is compiled
once and then run on the pooled connection's DBAPI cursor. On any other dialect (the replica may be
MySQL) a statement runs through ``Connection.execute``.

Only public APIs are used, and what stays SQLAlchemy's is kept:

* the pool and the Connection's transaction: a statement begins the transaction when none is
  open and the connection is not in autocommit (``Connection.begin``), so ``commit()`` and
  ``rollback()`` keep working;
* the ``before_cursor_execute`` and ``after_cursor_execute`` events, fired through the
  Connection's documented ``dispatch`` collection, so tracing and slow-statement logging see
  these statements too. The ``context`` argument is a ``DriverContext`` (listeners may set
  attributes on it), not an ``ExecutionContext``: there is none on this path;
* errors: a driver error becomes SQLAlchemy's ``DBAPIError`` (``DBAPIError.instance``, with
  parameters hidden), and a disconnect invalidates the connection (``Connection.invalidate``).

tests/test_statements.py pins each of these, and compares every statement's rows through this
path and through ``Connection.execute``, so a change in SQLAlchemy or psycopg that this path
relies on fails a test instead of changing behaviour.
"""

from __future__ import annotations

from collections import namedtuple
from collections.abc import Mapping
from typing import Any

from sqlalchemy import ClauseElement, Connection, text
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.exc import DBAPIError

Params = Mapping[str, Any]

_PSYCOPG = PGDialect_psycopg()


class DriverContext:
    """What ``before_cursor_execute``/``after_cursor_execute`` listeners receive as ``context``
    for a statement run on the driver's cursor: a plain object they may keep state on."""

    __slots__ = ("__dict__", "statement")

    def __init__(self, statement: str) -> None:
        self.statement = statement


class Statement:
    """A row-returning statement (SELECT, a function call, or DML with RETURNING).

    ``clause`` is SQL text with ``:name`` parameters, or a Core construct whose parameters are
    plain values (ints, strings, timestamps, UUIDs, lists for arrays) and whose columns need no
    result processing; tests/test_statements.py checks both for every statement the service runs
    this way. Rows are named tuples: attribute access by column label, as with SQLAlchemy's Row.
    """

    __slots__ = ("_row", "clause", "driver_sql")

    def __init__(self, clause: str | ClauseElement) -> None:
        self.clause: ClauseElement = text(clause) if isinstance(clause, str) else clause
        # psycopg's own SQL (``%(name)s`` parameters), compiled once.
        self.driver_sql: str = self.clause.compile(dialect=_PSYCOPG).string
        self._row: Any = None

    def __repr__(self) -> str:
        return f"Statement({str(self.clause)[:60]!r})"

    def all(self, conn: Connection, params: Params | None = None) -> list[Any]:
        if conn.dialect.name != "postgresql" or conn.dialect.driver != "psycopg":
            return list(conn.execute(self.clause, dict(params or {})))  # type: ignore[call-overload]
        return self._on_driver(conn, dict(params or {}))

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

    def _on_driver(self, conn: Connection, params: dict[str, Any]) -> list[Any]:
        dbapi_connection: Any = conn.connection.dbapi_connection
        if not dbapi_connection.autocommit and not conn.in_transaction():
            # The driver begins a transaction implicitly; SQLAlchemy must know, or a later
            # conn.commit() would do nothing. (In autocommit there is none to know about.)
            conn.begin()
        sql = self.driver_sql
        cursor = _cursor(conn, dbapi_connection)
        dispatch = conn.dispatch
        context = DriverContext(sql)
        for listener in dispatch.before_cursor_execute:
            sql, params = listener(conn, cursor, sql, params, context, False)
        try:
            # Always a mapping, even empty: the driver then unescapes the compiled "%%".
            cursor.execute(sql, params)
            rows = cursor.fetchall()
            if self._row is None:
                # psycopg builds the description's column objects anew on every access: once.
                self._row = _row_type([column.name for column in cursor.description])
        except Exception as exc:
            raise driver_error(conn, exc, sql, params, cursor) from exc
        except BaseException:
            # Interrupted mid-statement (KeyboardInterrupt, a cancelled thread): the connection's
            # state is unknown, so it must not go back to the pool.
            conn.invalidate()
            raise
        for listener in dispatch.after_cursor_execute:
            listener(conn, cursor, sql, params, context, False)
        make = self._row._make
        return [make(row) for row in rows]


def driver_error(
    conn: Connection, exc: Exception, sql: str, params: dict[str, Any], cursor: Any
) -> Exception:
    """The driver's error as SQLAlchemy's (an IntegrityError, OperationalError... subclass of
    DBAPIError, parameters hidden); a lost connection is invalidated, so the pool replaces it.
    For any statement run on the driver's connection directly (a COPY too), through
    SQLAlchemy's public API only."""
    dialect = conn.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    if not isinstance(exc, dbapi_error):
        return exc
    disconnect = dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor)
    if disconnect:
        conn.invalidate(exc)
    return DBAPIError.instance(
        sql,
        params,
        exc,
        dbapi_error,
        hide_parameters=True,
        connection_invalidated=disconnect,
        dialect=dialect,
    )


def _row_type(labels: list[str]) -> Any:
    """Rows are read by label: two columns with one label would make one of them unreachable."""
    if len(set(labels)) != len(labels):
        raise ValueError(f"a statement's columns share labels: {sorted(labels)}")
    return namedtuple("Row", labels, rename=True)


_CURSOR = "app.statements.cursor"


def _cursor(conn: Connection, dbapi_connection: Any) -> Any:
    """One cursor per pooled DBAPI connection, kept in the pool's per-connection ``info``: a new
    psycopg cursor copies the connection's adapters map, a cost paid per statement otherwise.
    A closed cursor, or one of a connection since replaced, is not reused."""
    info = conn.info
    cursor = info.get(_CURSOR)
    if cursor is None or cursor.connection is not dbapi_connection or cursor.closed:
        cursor = info[_CURSOR] = dbapi_connection.cursor()
    return cursor
