"""Logs carry no row contents (SPEC 8.1): a database error's text can hold a note (PostgreSQL's
DETAIL echoes the failing row, a raised message quotes anything, SQLAlchemy's adds the statement's
parameters), so of an unexpected database error only its class, SQLSTATE and the constraint and
table names are logged, and a traceback never shows a database error's message.

Every record the test run captured is rendered with both of the app's formatters (JSON lines and
text), the way production renders it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from app.logs import JsonFormatter, TextFormatter
from tests.factories import Replica, add_scores, new_agent

NOTE = "Mrs Example said call after the school run 4471"
FORMATTERS = (JsonFormatter(), TextFormatter("%(asctime)s %(levelname)-7s %(name)s %(message)s"))


def rendered(records: list[logging.LogRecord]) -> str:
    return "\n".join(f.format(r) for r in records for f in FORMATTERS)


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Everything the app logs at INFO and above, with the loggers production keeps at WARNING
    (app.logs.configure_logging: SQLAlchemy's engine would log statements and parameters) kept
    there."""
    caplog.set_level(logging.INFO)
    for noisy in ("sqlalchemy.engine", "sqlalchemy.pool", "httpx", "httpcore"):
        caplog.set_level(logging.WARNING, logger=noisy)
    return caplog


@pytest.fixture
def refuse_notes(store_engine: Engine) -> Iterator[Callable[[str], None]]:
    """Make a completion's write of a note fail inside the database, in one of two ways: a check
    constraint (PostgreSQL's DETAIL then echoes the failing row, note included) or a trigger
    that raises an error whose message and DETAIL quote the note. Dropped after the test."""

    def install(how: str) -> None:
        with store_engine.begin() as conn:
            if how == "check":
                conn.execute(
                    text(
                        "ALTER TABLE assignments ADD CONSTRAINT cq_test_no_school_run"
                        " CHECK (notes IS NULL OR notes NOT LIKE '%school run%') NOT VALID"
                    )
                )
            else:
                conn.execute(
                    text(
                        "CREATE FUNCTION cq_test_refuse_note() RETURNS trigger LANGUAGE plpgsql"
                        " AS $$ BEGIN RAISE EXCEPTION 'refused the note %', NEW.notes"
                        " USING DETAIL = 'the note was ' || NEW.notes; END $$"
                    )
                )
                conn.execute(
                    text(
                        "CREATE TRIGGER cq_test_refuse_note BEFORE UPDATE ON assignments"
                        " FOR EACH ROW WHEN (NEW.notes IS NOT NULL)"
                        " EXECUTE FUNCTION cq_test_refuse_note()"
                    )
                )

    yield install
    with store_engine.begin() as conn:
        conn.execute(
            text("ALTER TABLE assignments DROP CONSTRAINT IF EXISTS cq_test_no_school_run")
        )
        conn.execute(text("DROP TRIGGER IF EXISTS cq_test_refuse_note ON assignments"))
        conn.execute(text("DROP FUNCTION IF EXISTS cq_test_refuse_note()"))


@pytest.mark.parametrize(
    ("how", "expected"),
    [
        (
            "check",
            {
                "error_class": "IntegrityError",
                "driver_error_class": "CheckViolation",
                "sqlstate": "23514",
                "schema": "public",
                "table": "assignments",
                "constraint": "cq_test_no_school_run",
            },
        ),
        (
            "raise",
            {
                "error_class": "ProgrammingError",
                "driver_error_class": "RaiseException",
                "sqlstate": "P0001",
            },
        ),
    ],
)
def test_a_database_error_holding_a_note_is_logged_without_it(
    client: TestClient,
    store_engine: Engine,
    replica: Replica,
    cron_headers: dict[str, str],
    refuse_notes: Callable[[str], None],
    logs: pytest.LogCaptureFixture,
    how: str,
    expected: dict[str, str],
) -> None:
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": "unsigned_users"}])
    agent = new_agent(store_engine, "caller")
    assert client.get("/api/cron/populate-separated-queues", headers=cron_headers).is_success
    claimed = client.post("/api/queues/unsigned_users/next-user", headers=agent.auth)
    assert claimed.status_code == 200, claimed.text
    refuse_notes(how)

    answer = client.post(
        f"/api/assignments/{claimed.json()['assignment_id']}/complete",
        json={"outcome": "no_answer", "notes": NOTE},
        headers=agent.auth,
    )

    assert answer.status_code == 500
    assert answer.json() == {
        "error": "InternalError",
        "detail": "the server failed to handle the request",
    }
    everything = rendered(logs.records)
    for trace in (NOTE, "school run", "Failing row", "refused the note", "cq_complete"):
        assert trace not in everything, trace
    errors = [r for r in logs.records if r.getMessage() == "request.database_error"]
    assert len(errors) == 1
    logged = {k: v for k, v in errors[0].__dict__.items() if k in {*expected, "exc_info"}}
    assert logged == {**expected, "exc_info": None}
    assert "request.database_error" in everything and expected["sqlstate"] in everything


def test_the_formatters_withhold_a_database_errors_message_anywhere_in_a_chain(
    store_engine: Engine,
) -> None:
    """A traceback's last line is the exception's message: for a database error, directly or
    as the cause or context of another exception, the app's formatters show its class, SQLSTATE
    and names instead. Other exceptions keep their messages, and a traceback another handler's
    formatter cached on the record is not reused."""
    log = logging.getLogger("tests.database_error_logs")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    log.addHandler(keep)
    try:
        with store_engine.connect() as conn:
            conn.execute(text("CREATE TEMP TABLE said (n text CHECK (n NOT LIKE '%school%'))"))
            try:
                conn.execute(text("INSERT INTO said VALUES (:note)"), {"note": NOTE})
            except DBAPIError as exc:
                database_error = exc
        try:
            raise database_error
        except DBAPIError:
            log.exception("direct")
        try:
            try:
                raise database_error
            except DBAPIError as exc:
                raise RuntimeError("the outer message") from exc
        except RuntimeError:
            log.exception("caused")
        try:
            try:
                raise database_error.orig  # the driver's own error
            except Exception:
                raise KeyError("handling")  # noqa: B904 (the implicit context is the point)
        except KeyError:
            log.exception("context")
    finally:
        log.removeHandler(keep)

    assert NOTE in str(database_error)  # the message does hold the note
    assert [r.getMessage() for r in records] == ["direct", "caused", "context"]
    # Another handler's formatter renders the record first and caches its traceback on it.
    for record in records:
        logging.Formatter().format(record)
        assert NOTE in (record.exc_text or "")
    everything = rendered(records)
    assert NOTE not in everything
    assert "Failing row" not in everything and "[parameters:" not in everything
    assert "Traceback (most recent call last)" in everything
    assert (
        "sqlalchemy.exc.IntegrityError: (message withheld) error_class=IntegrityError"
        " driver_error_class=CheckViolation sqlstate=23514" in everything
    )
    assert "psycopg.errors.CheckViolation: (message withheld)" in everything
    assert "RuntimeError: the outer message" in everything
    assert "The above exception was the direct cause of the following exception" in everything
    assert "During handling of the above exception, another exception occurred" in everything
    assert "KeyError: 'handling'" in everything
