"""The ASGI application. It never starts or migrates a database by itself."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from app.api import admin, agents, cron, errors, ops
from app.config import Settings, get_settings
from app.logs import configure_logging
from app.services import Services


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        settings.check_server_ready()
        app.state.services = Services.build(settings)
        try:
            yield
        finally:
            app.state.services.dispose()

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
