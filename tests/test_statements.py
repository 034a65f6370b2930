"""app.statements: the hot statements run on the driver's cursor must behave as SQLAlchemy's
execution would: transactions that commit, errors that are SQLAlchemy's (without parameters),
disconnects that invalidate, and a connection that serves again after an error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy.exc import DataError, DBAPIError

from app.auth import identity
from app.auth.people import create_agent
from app.auth.tokens import hash_token
from app.queues import assignments, claims, leases
from app.replica import reader
from app.services import Services
from app.statements import Statement
from tests.factories import Replica, add_scores

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


def test_columns_sharing_a_label_are_refused(engine: Engine) -> None:
    """Rows are read by label: a second column with the same label would shadow the first."""
    with engine.connect() as conn, pytest.raises(ValueError, match="share labels"):
        Statement("SELECT 1 AS a, 2 AS a").one(conn)


def test_cursor_events_see_driver_statements(engine: Engine) -> None:
    """Tracing and slow-statement logging listen to before/after_cursor_execute: they must see
    the statements run on the driver's cursor, and a retval=True listener may rewrite them (a
    tracing comment, say) as it can for SQLAlchemy's own executions."""
    seen: list[tuple[str, str, Any]] = []

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def before(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(("before", statement, parameters))
        context.started = "mark"  # listeners keep per-execution state on the context
        return "/* traced */ " + statement, parameters

    @event.listens_for(engine, "after_cursor_execute")
    def after(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        seen.append(("after", statement, context.started))

    with engine.connect() as conn:
        assert INSERT.scalar(conn, {"v": 5}) == 5
        conn.commit()
    assert seen[0] == ("before", INSERT.driver_sql, {"v": 5})
    assert seen[1] == ("after", "/* traced */ " + INSERT.driver_sql, "mark")
    event.remove(engine, "before_cursor_execute", before)
    event.remove(engine, "after_cursor_execute", after)


def _both_ways(conn: Connection, steps: list[tuple[Statement, dict[str, Any]]]) -> list[Any]:
    """Each statement's rows through the driver and through Connection.execute, from the same
    state (a transaction rolled back in between)."""
    results = []
    for driver in (True, False):
        rows = []
        with conn.begin() as tx:
            for statement, params in steps:
                if driver:
                    got = [tuple(r) for r in statement.all(conn, params)]
                else:
                    got = [tuple(r) for r in conn.execute(statement.clause, params)]
                rows.append(got)
            tx.rollback()
        results.append(rows)
    return results


def _same(driver_rows: list[Any], sqlalchemy_rows: list[Any], generated: set[int]) -> None:
    """Equal value by value; columns the database generates (ids, now()) equal in type."""
    assert len(driver_rows) == len(sqlalchemy_rows)
    for a, b in zip(driver_rows, sqlalchemy_rows, strict=True):
        assert len(a) == len(b)
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert type(x) is type(y), (i, x, y)
            if i not in generated:
                assert x == y, (i, x, y)


def test_the_hot_statements_give_what_sqlalchemy_would(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """What this path relies on, pinned: for these statements SQLAlchemy would pass parameters
    and values through untouched. Each hot statement runs both ways on real rows; a change in
    SQLAlchemy's or psycopg's processing of any of their parameters or columns fails here."""
    Replica(replica_engine).unsigned(42)
    add_scores(store_engine, [{"user_id": 42, "current_queue_type": "unsigned_users"}])
    services.population().run(trigger="test")
    with store_engine.begin() as conn:
        token = create_agent(conn, "pinned")
    with services.autocommit.connect() as conn:
        agent = identity.authenticate_token(conn, token).agent
    claim = {
        "agent_id": agent.id,
        "queue_type": "unsigned_users",
        "source": "queue",
        "open": True,
        "tried": [],
        "cooling": 0,
        "sweep_limit": 10,
        "max_day": 3,
        "max_week": 10,
        "personal": 30,
    }
    with store_engine.connect() as conn:
        item = claims._CLAIM.one(conn, claim)
        conn.rollback()
        hand_out = {
            "agent_id": agent.id,
            "queue_type": "unsigned_users",
            "source": "queue",
            "item_id": item.item_id,
            "user_id": 42,
            "claim_id": item.claim_id,
            "priority_score": 0,
            "queue_position": 1,
            "queue_reason": item.queue_reason,
            "details": json.dumps(item.details),
            "lease": 60,
            "claim_ms": 1,
            "max_day": 3,
            "max_week": 10,
            "daily_exempt": False,
            "phone_key": "0" * 64,
            "key_fingerprint": services.suppression.fingerprint,
        }
        steps: list[tuple[Statement, dict[str, Any]]] = [
            (
                identity._AUTHENTICATE[(identity.Via.TOKEN, False)],
                {"secret_hash": hash_token(token), "idle_minutes": 0},
            ),
            (claims._CLAIM, claim),
            (claims._HAND_OUT, hand_out),
            (leases._SWEEP, {"limit": 10}),
        ]
        driver, plain = _both_ways(conn, steps)
        for i in range(len(steps)):
            # generated: the authentication's now(); the hand-out's new id and times
            _same(driver[i], plain[i], generated={0: {6}, 2: {2, 3, 4}}.get(i, set()))

        with conn.begin():
            out = claims._HAND_OUT.one(conn, hand_out)
        complete = {
            "agent_id": agent.id,
            "id": out.assignment_id,
            "queue_type": "unsigned_users",
            "entry_id": item.item_id,
            "user_id": 42,
            "assigned_at": out.assigned_at,
            "outcome": "call_back",
            "callback_at": datetime.now(UTC) + timedelta(days=1),
            "notes": "n",
            "change": 0,
            "delay_seconds": 86_400,
            "successful": True,
            "deactivates": False,
            "min_score": 0,
            "max_score": 200,
            "verdict_known": True,
            "verdict_type": "outstanding_requests",
            "verdict_reason": "r",
            "suppresses": False,
        }
        driver, plain = _both_ways(
            conn,
            [
                # The agent holds the hand-out: the authentication brings its head.
                (
                    identity._AUTHENTICATE[(identity.Via.TOKEN, True)],
                    {"secret_hash": hash_token(token), "idle_minutes": 0},
                ),
                (assignments._HEAD, {"id": out.assignment_id}),
                (assignments._COMPLETE, complete),
            ],
        )
        _same(driver[0], plain[0], generated={6})  # now()
        assert driver[0][0][13:] == (
            out.assignment_id,
            42,
            "unsigned_users",
            item.item_id,
            out.assigned_at,
        )
        _same(driver[1], plain[1], generated=set())
        _same(driver[2], plain[2], generated={20})  # the callback each call_back booked
        assert driver[2][0][0] == "completed"

    queries = reader._QUERIES[True]
    with replica_engine.connect() as conn:
        steps = [
            (queries.user_facts, {"user_id": 42}),
            (queries.user_facts_with_contacts, {"user_id": 42}),
            (reader._CONTACT, {"user_id": 42}),
        ]
        driver, plain = _both_ways(conn, steps)
        for i in range(len(steps)):
            _same(driver[i], plain[i], generated=set())
        assert driver[1]  # the user, their claim: real rows were compared


def test_slow_statements_are_logged_without_parameters(
    make_services: Any, caplog: pytest.LogCaptureFixture
) -> None:
    services = make_services(slow_statement_ms=20)
    slow = Statement("SELECT pg_sleep(0.05) IS NULL AS slept, CAST(:secret AS text) AS s")
    with caplog.at_level("WARNING", logger="app.db.slow"), services.engine.connect() as conn:
        slow.one(conn, {"secret": SECRET})
        Statement("SELECT 1 AS quick").one(conn)
    records = [r for r in caplog.records if r.getMessage() == "db.slow_statement"]
    assert len(records) == 1
    assert records[0].statement.startswith("SELECT pg_sleep(0.05)")  # type: ignore[attr-defined]
    assert records[0].duration_ms >= 50  # type: ignore[attr-defined]
    assert SECRET not in str(records[0].__dict__)
