"""Logging: JSON lines in production, readable text elsewhere; context travels as extras.

Logs carry no row contents (SPEC 8.1). A database error's text does: PostgreSQL's DETAIL echoes
the failing row ("Failing row contains (...)", a note among its values), a raised message can
quote anything, and SQLAlchemy's adds the statement's parameters. So of a database error only
its class, SQLSTATE and the names PostgreSQL gives (constraint, table, column) are ever logged:
``database_error_fields`` for a log line's context, and both formatters render a traceback with
those in place of any database error's message, wherever it sits in the exception's chain.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import UTC, datetime
from types import TracebackType
from typing import Any
from urllib.parse import unquote_plus

import psycopg
import pymysql.err
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from app.errors import CallqueueError

request_id: ContextVar[str | None] = ContextVar("request_id", default=None)

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "color_message",  # uvicorn's ANSI-coloured copy of the message
}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


DATABASE_ERRORS = (SQLAlchemyError, psycopg.Error, pymysql.err.Error)
# The names PostgreSQL reports with an error (psycopg's Diagnostic): names from the schema, never
# values.
_DIAGNOSTIC_NAMES = ("schema_name", "table_name", "column_name", "constraint_name")

_ExcInfo = tuple[type[BaseException], BaseException, TracebackType | None] | tuple[None, None, None]


def database_error_fields(exc: BaseException) -> dict[str, Any]:
    """What may be logged of a database error: its class (and the driver's), SQLSTATE or MySQL
    error number, and the schema names PostgreSQL reports. Never its message."""
    fields: dict[str, Any] = {"error_class": type(exc).__name__}
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    if orig is not exc and orig is not None:
        fields["driver_error_class"] = type(orig).__name__
    if isinstance(orig, psycopg.Error):
        if orig.sqlstate:
            fields["sqlstate"] = orig.sqlstate
        for name in _DIAGNOSTIC_NAMES:
            value = getattr(orig.diag, name, None)
            if value:
                fields[name.removesuffix("_name")] = value
    elif isinstance(orig, pymysql.err.Error) and orig.args and isinstance(orig.args[0], int):
        fields["mysql_errno"] = orig.args[0]
    code = getattr(exc, "code", None)
    if isinstance(exc, SQLAlchemyError) and code:
        fields["sqlalchemy_code"] = code
    return fields


def describe_error(exc: BaseException) -> str:
    """A one-line cause for a run's history, a report or a command's message, with no values:
    a domain error's sentence; a database error's class with its SQLSTATE and the names
    PostgreSQL gives (its message can hold row values), or, for a failure to connect (no
    SQLSTATE, no row), the first line of the driver's message; else the error's class."""
    if isinstance(exc, CallqueueError):
        return exc.detail
    if isinstance(exc, DATABASE_ERRORS):
        fields = database_error_fields(exc)
        kind = fields.get("driver_error_class", fields["error_class"])
        if "sqlstate" not in fields and "mysql_errno" not in fields:
            orig = exc.orig if isinstance(exc, DBAPIError) else exc
            lines = str(orig).strip().splitlines()
            return f"database error ({kind}): {lines[0] if lines else ''}"[:500]
        names = ", ".join(
            f"{key} {fields[key]}"
            for key in ("sqlstate", "mysql_errno", "table", "constraint")
            if key in fields
        )
        return f"database error ({kind}, {names})"
    return f"unexpected error ({type(exc).__name__})"


def _last_line(exc: BaseException) -> str:
    if isinstance(exc, DATABASE_ERRORS):
        kind = type(exc)
        context = " ".join(f"{k}={v}" for k, v in database_error_fields(exc).items())
        return f"{kind.__module__}.{kind.__qualname__}: (message withheld) {context}\n"
    return "".join(traceback.format_exception_only(exc))


_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_exception_safely(exc: BaseException) -> str:
    """The traceback module's rendering of an exception and its chain, except that a database
    error's message (the last line of its part) is replaced by its class, SQLSTATE and names."""
    parts: list[str] = []  # newest first, with the link to the next older one after each
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frames = traceback.format_tb(current.__traceback__)
        head = ["Traceback (most recent call last):\n", *frames] if frames else []
        parts.append("".join([*head, _last_line(current)]))
        if current.__cause__ is not None:
            parts.append(_CAUSE)
            current = current.__cause__
        elif current.__context__ is not None and not current.__suppress_context__:
            parts.append(_CONTEXT)
            current = current.__context__
        else:
            current = None
    return "".join(reversed(parts)).rstrip("\n")


def _format_exc_info(formatter: logging.Formatter, ei: _ExcInfo) -> str:
    if ei[1] is None:
        return logging.Formatter.formatException(formatter, ei)
    return format_exception_safely(ei[1])


class JsonFormatter(logging.Formatter):
    def formatException(self, ei: _ExcInfo) -> str:
        return _format_exc_info(self, ei)

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
            **_extras(record),
        }
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class TextFormatter(logging.Formatter):
    def formatException(self, ei: _ExcInfo) -> str:
        return _format_exc_info(self, ei)

    def format(self, record: logging.LogRecord) -> str:
        # logging.Formatter caches a record's traceback text on the record, for every handler:
        # render this formatter's own, never one another handler's formatter left there.
        cached, record.exc_text = record.exc_text, None
        try:
            base = super().format(record)
        finally:
            record.exc_text = cached
        extras = " ".join(f"{k}={v}" for k, v in _extras(record).items())
        return f"{base} {extras}" if extras else base


# Query parameters whose values are secrets: a set-password link's token, an identity provider's
# code and state. uvicorn's access log prints the whole path with its query string.
SECRET_PARAMETERS = frozenset({"token", "code", "state", "password", "secret", "access_token"})


def redact_query(path: str) -> str:
    """A path with its secret query parameters' values replaced (the name is kept, so a reader
    still sees what the request was)."""
    base, sep, query = path.partition("?")
    if not sep:
        return path
    items = []
    for item in query.split("&"):
        name, eq, _ = item.partition("=")
        secret = unquote_plus(name).strip().lower() in SECRET_PARAMETERS
        items.append(f"{name}=[redacted]" if secret and eq else item)
    return f"{base}?{'&'.join(items)}"


class AccessLogRedaction(logging.Filter):
    """On uvicorn's access logger: its records' paths without secrets (SPEC 8.2: link tokens,
    like session and API tokens, are never logged, access logs included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            client, method, path, version, status = args
            record.args = (client, method, redact_query(str(path)), version, status)
        return True


_ACCESS_REDACTION = AccessLogRedaction()

# At DEBUG, SQLAlchemy would log statement parameters and result rows (phone numbers, token
# hashes), and HTTP clients their headers and URLs (the identity provider's, with a code in a
# query): they stay at WARNING whatever LOG_LEVEL says.
QUIET_LIBRARIES = (
    "sqlalchemy.engine",
    "sqlalchemy.pool",
    "httpx",
    "httpcore",
    "httpx2",
    "httpcore2",
    "authlib",
    "multipart",
)


def quiet_libraries() -> None:
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(logging.WARNING)


def configure_logging(level: str = "INFO", *, json_lines: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else TextFormatter("%(asctime)s %(levelname)-7s %(name)s %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    quiet_libraries()
    # On the logger itself, so it holds whichever handlers uvicorn's own configuration gives it
    # (``uvicorn app.main:app`` with its default logging, or ``callqueue serve``).
    access = logging.getLogger("uvicorn.access")
    if _ACCESS_REDACTION not in access.filters:
        access.addFilter(_ACCESS_REDACTION)
