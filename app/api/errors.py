"""Domain error -> HTTP status, and the one error body shape: {"error", "detail"}."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from app import errors
from app.db import SessionBoundsMissing
from app.logs import database_error_fields

log = logging.getLogger(__name__)

# lock_not_available (lock_timeout), query_canceled (statement_timeout), deadlock_detected,
# serialization_failure: transient, the client should retry.
BUSY_SQLSTATES = {"55P03", "57014", "40P01", "40001"}

STATUS: dict[type[errors.CallqueueError], int] = {
    errors.Unauthorized: 401,
    errors.Forbidden: 403,
    errors.NotFound: 404,
    errors.Conflict: 409,
    errors.PopulationRunning: 409,
    errors.DiscoveryRunning: 409,
    errors.ReplicaUnavailable: 503,
    errors.ReplicaLagging: 503,
    errors.InvalidInput: 422,
    errors.ServiceBusy: 503,
    errors.OutsideCallingHours: 409,
    errors.SignInLocked: 429,
    errors.BadSignInRequest: 400,
    # A process whose do-not-call key is not the list's hands nobody out (SPEC 8.1).
    errors.SuppressionKeyMismatch: 503,
}


class ErrorBody(BaseModel):
    error: str
    detail: str


class FieldError(BaseModel):
    loc: list[str | int]
    msg: str


class ValidationErrorBody(ErrorBody):
    fields: list[FieldError]


def _status_of(exc: errors.CallqueueError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None, **extra: Any
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse({"error": code, "detail": detail, **extra}, status, headers=headers)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI declarations for a route's error answers."""
    return {
        s: {
            "model": ValidationErrorBody if s == 422 else ErrorBody,
            "description": HTTPStatus(s).phrase,
        }
        for s in statuses
    }


def _allowed_methods(request: Request) -> set[str]:
    """The methods of every route whose path template matches the request's path."""
    index: list[tuple[re.Pattern[str], set[str]]] | None = getattr(
        request.app.state, "allow_index", None
    )
    if index is None:
        index = [
            (compile_path(context.path)[0], set(context.methods or ()))
            for context in iter_route_contexts(request.app.routes)
            if context.path
        ]
        request.app.state.allow_index = index
    path = request.url.path
    return {method for pattern, methods in index if pattern.match(path) for method in methods}


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.CallqueueError)
    async def domain_error(_: Request, exc: errors.CallqueueError) -> JSONResponse:
        extra: dict[str, Any] = exc.body_extra()
        fields = getattr(exc, "fields", None)
        if fields is not None:
            extra["fields"] = fields
        response = error_response(_status_of(exc), exc.code, exc.detail, **extra)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.exception_handler(RequestValidationError)
    async def validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Never echo the input back: loc and msg only, and an unknown field's name (chosen by
        # the caller) is not repeated either.
        fields = []
        for e in exc.errors():
            loc = list(e.get("loc", ()))
            if e.get("type") == "extra_forbidden" and loc:
                loc[-1] = "(unknown field)"
            fields.append({"loc": loc, "msg": str(e.get("msg", ""))})
        return error_response(
            422, "ValidationError", "the request is not valid; see fields", fields=fields
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:
            # A body FastAPI cannot even parse (invalid UTF-8, absurd nesting or numbers) is a bad
            # body like any other: 422, as the contract says.
            return error_response(
                422,
                "ValidationError",
                "the request body is not valid JSON",
                fields=[{"loc": ["body"], "msg": "the body could not be parsed as JSON"}],
            )
        code = HTTPStatus(exc.status_code).phrase.replace(" ", "").replace("-", "")
        detail = (
            exc.detail if isinstance(exc.detail, str) else HTTPStatus(exc.status_code).description
        )
        headers = dict(exc.headers or {})
        if exc.status_code == 405:
            # RFC 9110 15.5.6: every method the resource supports. Starlette names only those
            # of the first route that matched the path (GET and PUT /api/admin/flags are two).
            headers["Allow"] = ", ".join(sorted(_allowed_methods(request)))
        return error_response(exc.status_code, code, detail, headers=headers)

    @app.exception_handler(DBAPIError)
    async def database_error(_: Request, exc: DBAPIError) -> JSONResponse:
        """A lock or statement timeout, or a lost database: 503 and retry, never a bare 500."""
        sqlstate = getattr(exc.orig, "sqlstate", None)
        if sqlstate in BUSY_SQLSTATES:
            response = error_response(
                503, "ServiceBusy", "the database is busy (a queue refresh?); retry shortly"
            )
        elif isinstance(exc, OperationalError) or exc.connection_invalidated:
            log.warning("request.database_unavailable", extra={"sqlstate": sqlstate})
            response = error_response(
                503, "DatabaseUnavailable", "the database is unreachable; retry shortly"
            )
        else:
            # Class, SQLSTATE and names only: the error's text can hold the row (a note).
            log.error("request.database_error", extra=database_error_fields(exc))
            return error_response(500, "InternalError", "the server failed to handle the request")
        response.headers["Retry-After"] = str(errors.ServiceBusy.retry_after)
        return response

    @app.exception_handler(SessionBoundsMissing)
    async def bounds_missing(_: Request, exc: SessionBoundsMissing) -> JSONResponse:
        """Behind a pooler that does not bound its sessions, nothing runs (app.db)."""
        response = error_response(
            503, "DatabaseMisconfigured", "the database connection is not usable; see the logs"
        )
        response.headers["Retry-After"] = str(errors.ServiceBusy.retry_after)
        return response

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(_: Request, exc: PoolTimeout) -> JSONResponse:
        """Every pooled connection busy for the pool's whole timeout: overload, not a fault."""
        log.warning("request.pool_exhausted")
        response = error_response(
            503, "ServiceBusy", "every database connection is busy; retry shortly"
        )
        response.headers["Retry-After"] = str(errors.ServiceBusy.retry_after)
        return response

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(psycopg.Error)
    async def other_database_error(_: Request, exc: Exception) -> JSONResponse:
        """Any other database error (a statement SQLAlchemy could not send, the driver's own):
        handled here rather than by ``unexpected``, whose exception Starlette passes on to the
        server to log with the server's own formatter, message and all."""
        log.error("request.database_error", extra=database_error_fields(exc))
        return error_response(500, "InternalError", "the server failed to handle the request")

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        # The app's formatters withhold the message of any database error in its chain.
        log.error("request.unhandled_error", exc_info=exc)
        return error_response(500, "InternalError", "the server failed to handle the request")
