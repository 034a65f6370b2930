"""The ASGI application. It never starts or migrates a database by itself."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from uuid import uuid4

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware

from app import metrics
from app.api import admin, agents, cron, errors, ops
from app.config import Settings, get_settings
from app.logs import configure_logging, request_id
from app.scheduler import Scheduler
from app.services import Services


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.check_server_ready()
        services = Services.build(settings)
        app.state.services = services
        scheduler = Scheduler(services) if settings.scheduler_on else None
        if scheduler:
            scheduler.start()
        try:
            yield
        finally:
            if scheduler:
                scheduler.stop()
            services.dispose()

    app = FastAPI(
        title="callqueue",
        version="0.1.0",
        summary="Prioritised outbound call queues with atomic hand-out to agents",
        lifespan=lifespan,
    )
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PUT"],
            allow_headers=["Authorization", "Content-Type"],
        )
    errors.install(app)

    @app.middleware("http")
    async def observe(request: Request, call_next: Any) -> Response:
        """Request id for the logs, and request metrics by route template (not raw path)."""
        rid = request.headers.get("x-request-id")
        token = request_id.set(rid if rid and len(rid) <= 64 and rid.isprintable() else uuid4().hex)
        started = time.perf_counter()
        try:
            response: Response = await call_next(request)
        finally:
            request_id.reset(token)
        route = getattr(request.scope.get("route"), "path", "unmatched")
        metrics.HTTP_REQUESTS.labels(request.method, route, str(response.status_code)).inc()
        metrics.HTTP_SECONDS.labels(request.method, route).observe(time.perf_counter() - started)
        return response

    app.include_router(ops.router)
    app.include_router(cron.router)
    app.include_router(agents.router)
    app.include_router(admin.router)
    return app


def _app() -> FastAPI:
    settings = get_settings()
    configure_logging(settings.log_level, json_lines=settings.app_env == "production")
    return create_app(settings)


app = _app()
