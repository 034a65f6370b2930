"""What every ``callqueue`` command shares: the Typer application, the exit codes, the settings as
the server reads them, and the database (``DATABASE_URL``, or the embedded PostgreSQL)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from types import FrameType
from typing import TYPE_CHECKING

import typer
from sqlalchemy.engine import make_url

from app.config import Settings, get_settings
from app.logs import configure_logging

if TYPE_CHECKING:
    from rich.progress import Progress

log = logging.getLogger(__name__)


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    SCORER = "scorer"


EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_POPULATION_RUNNING = 75
CRON_SECRET_FILE = "cron_secret"
CRON_PATH = "/api/cron/populate-separated-queues"

cli = typer.Typer(
    name="callqueue",
    help="Prioritised outbound call queues: run the service and operate it.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


# -- settings and the database -------------------------------------------------------------------


def command_settings() -> Settings:
    """The process's settings, as the server reads them, with logging configured from them.

    Without DATABASE_URL the embedded database is used, which implies APP_ENV=development unless
    APP_ENV says otherwise; asking for production there is refused (no database of convenience).
    """
    settings = get_settings()
    if not settings.database_url:
        if "app_env" in settings.model_fields_set:
            if settings.app_env == "production":
                settings.require_database()
        else:
            settings = settings.model_copy(update={"app_env": "development"})
    configure_logging(settings.log_level, json_lines=settings.app_env == "production")
    return settings


@contextmanager
def database(settings: Settings) -> Iterator[Settings]:
    """Settings pointing at a database: DATABASE_URL as it is, else the embedded PostgreSQL,
    created and migrated, and stopped on the way out unless another process still holds it."""
    if settings.database_url:
        yield settings
        return
    from app.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_dir)
    try:
        url = embedded.start()
        migrate_database(url)
        yield settings.model_copy(update={"database_url": url})
    finally:
        embedded.stop()


def migrate_database(url: str) -> None:
    # Alembic announces each of its plugins at INFO when first imported: noise for an operator.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    from alembic import command

    from app.health import alembic_config

    log.info("migrate.started", extra={"database": display_url(url)})
    command.upgrade(alembic_config(url), "head")
    log.info("migrate.finished")


def display_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def terminal_progress(*, of_bytes: bool) -> Iterator[Progress | None]:
    """A rich progress display on standard error when it is a terminal (each command adds its
    tasks: bytes of a file read, or rows done); None in a pipe or a log, which get the command's
    summary line only."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn() if of_bytes else MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
    ) as bar:
        yield bar
