"""The ASGI application. It never starts or migrates a database by itself."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager

from anyio import to_thread
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import console, metrics
from app.api import (
    admin,
    agents,
    callbacks,
    cron,
    errors,
    ops,
    people,
    privacy,
    rules,
    scores,
    webhooks,
)
from app.api.body_limit import BodyLimitMiddleware
from app.api.docs import docs_router
from app.config import Settings, get_settings
from app.logs import configure_logging, request_id
from app.queues.fronts import FrontKeeper
from app.scheduler import Scheduler
from app.services import Services
from app.webhooks.sender import WebhookSender


class _RequestIds:
    """Request ids unique across processes without reading the system's random source per
    request (uuid4 does: a getrandom() call each time): a random prefix per process, then a
    counter. A forked child draws a prefix of its own."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def new(self) -> str:
        return f"{self._prefix}-{next(self._counter):x}"


_REQUEST_IDS = _RequestIds()


class ObserveMiddleware:
    """Request id for the logs, and request metrics by route template (never the raw path).

    A plain ASGI middleware: Starlette's BaseHTTPMiddleware would add a task group and memory
    streams to every request, a measurable share of a claim's cost.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        token = request_id.set(
            rid if 0 < len(rid) <= 64 and rid.isprintable() else _REQUEST_IDS.new()
        )
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            request_id.reset(token)
            route = getattr(scope.get("route"), "path", "unmatched")
            method = scope["method"]
            metrics.HTTP_REQUESTS.labels(method, route, str(status)).inc()
            metrics.HTTP_SECONDS.labels(method, route).observe(time.perf_counter() - started)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.check_server_ready()
        # Sync routes run in AnyIO's thread pool (40 threads by default). Each request holds one
        # store connection at a time, so threads beyond the pool's capacity would only queue for
        # a connection while contending for the GIL.
        threads = settings.db_pool_size + settings.db_max_overflow
        to_thread.current_default_thread_limiter().total_tokens = threads
        # Authentication and the dashboards' routes run on a pool of their own
        # (app.api.deps.in_thread), the same size: under a burst of both kinds, threads beyond
        # the store pool wait for a connection, up to the pool's timeout (then 503 with
        # Retry-After).
        services = Services.build(settings)
        try:
            services.require_session_bounds()
            services.record_suppression_key()
        except BaseException:
            services.dispose()
            raise
        app.state.services = services
        services.replica_monitor.start()
        thread_pool = ThreadPoolExecutor(threads, thread_name_prefix="requests")
        app.state.threads = thread_pool
        scheduler = Scheduler(services) if settings.scheduler_on else None
        if scheduler:
            scheduler.start()
        sender = WebhookSender(settings) if settings.webhook_sender_enabled else None
        if sender:
            sender.start()
        fronts = (
            FrontKeeper(services.engine, settings.queue_front_seconds)
            if settings.queue_front_seconds
            else None
        )
        if fronts:
            fronts.start()
        try:
            yield
        finally:
            if fronts:
                fronts.stop()
            if sender:
                sender.stop()
            if scheduler:
                scheduler.stop()
            # uvicorn has finished the requests in flight by now: the threads are idle.
            thread_pool.shutdown(wait=True)
            services.dispose()

    app = FastAPI(
        # The service exports Prometheus metrics itself; FastAPI's own OpenTelemetry hooks
        # would only cost time on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False, "operation_spans": False},
        title="callqueue",
        version="0.1.0",
        summary="Prioritised outbound call queues with atomic hand-out to agents",
        lifespan=lifespan,
        # DOCS_ENABLED: off in production unless asked for. The pages are our own (their
        # assets served by the service, app/api/docs.py); no OAuth2 flow to redirect to.
        openapi_url="/openapi.json" if settings.docs_on else None,
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type"],
        )
    errors.install(app)

    # Before routing and authentication: a body over its route's cap is never read
    # (app/api/body_limit); the routes check the credentials before reading the rest
    # (app/api/routing).
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        scores_max_body_bytes=settings.scores_max_body_bytes,
    )
    app.add_middleware(ObserveMiddleware)

    # Routes are matched in order: the dashboards' routes, called all day, come first.
    app.include_router(agents.router)
    app.include_router(ops.router)
    app.include_router(cron.router)
    app.include_router(admin.router)
    app.include_router(people.router)
    app.include_router(privacy.router)
    app.include_router(webhooks.router)
    app.include_router(callbacks.router)
    app.include_router(scores.router)
    app.include_router(rules.router)
    if settings.docs_on:
        app.include_router(docs_router(app.title, "/openapi.json"))
    console.install(app)
    return app


def _app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.app_env == "production")
    return create_app(settings)


app = _app()
