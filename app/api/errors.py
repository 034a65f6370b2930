"""Domain error -> HTTP status, and the one error body shape: {"error", "detail"}."""

from __future__ import annotations

import logging
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from app import errors

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


def error_response(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
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


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.CallqueueError)
    async def domain_error(_: Request, exc: errors.CallqueueError) -> JSONResponse:
        extra: dict[str, Any] = {}
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
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
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
        return error_response(exc.status_code, code, detail)

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
            log.error("request.database_error", exc_info=exc)
            return error_response(500, "InternalError", "the server failed to handle the request")
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

    @app.exception_handler(Exception)
    async def unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.error("request.unhandled_error", exc_info=exc)
        return error_response(500, "InternalError", "the server failed to handle the request")
