"""The runs an operator starts by hand: ``migrate``, ``populate``, ``discover`` and ``sweep``."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy import create_engine

from app.cli.base import (
    EXIT_FAILED,
    EXIT_POPULATION_RUNNING,
    cli,
    command_settings,
    database,
    migrate_database,
)
from app.errors import (
    DiscoveryRunning,
    PopulationRunning,
)
from app.vocabulary import QueueType

if TYPE_CHECKING:  # the commands import the services when they run: a quick --help
    from app.intake.discovery import DiscoveryReport
    from app.queues.runs import RunReport as PopulationReport
    from app.services import Services

log = logging.getLogger(__name__)


@cli.command()
def migrate() -> None:
    """Upgrade the database to the latest schema (the embedded one when DATABASE_URL is unset)."""
    settings = command_settings()
    if settings.database_url:
        # DDL, one transaction per migration, at the operator's pace: never through a pooler.
        migrate_database(settings.direct_url or settings.database_url)
        return
    with database(settings):
        pass  # database() migrates the embedded database on the way in


@cli.command()
def populate(
    queue: Annotated[
        QueueType | None, typer.Option(help="populate only this queue", case_sensitive=False)
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="report what a run would do, write nothing")
    ] = False,
) -> None:
    """Populate the queues now; prints the cron route's JSON report on standard output.

    Exits 0 when every queue succeeded or was skipped, 1 when one failed, 75 when another
    population is running.
    """
    _run_once(
        lambda services: services.population().run(trigger="cli", queue=queue, dry_run=dry_run)
    )


@cli.command()
def discover() -> None:
    """Discover new leads on the replica now; prints the cron route's JSON report on standard
    output (progress in the logs, on standard error).

    Exits 0 when the run succeeded, 1 when it failed (a rerun resumes where it stopped), 75 when
    another discovery is running.
    """
    _run_once(lambda svc: svc.discovery().run(trigger="cli"))


def _run_once(run: Callable[[Services], PopulationReport | DiscoveryReport]) -> None:
    """A single-flight run (population, discovery): its JSON report on standard output, as the
    cron route's JSONResponse serialises it, so scripts can treat both alike; exit 0 when it
    succeeded, 1 when not, 75 when another run of it holds the lock."""
    from app.services import Services

    with database(command_settings()) as settings:
        services = Services.build(settings)
        try:
            report = run(services)
        except (PopulationRunning, DiscoveryRunning) as exc:
            typer.echo(f"callqueue: {exc.detail}", err=True)
            raise typer.Exit(EXIT_POPULATION_RUNNING) from None
        finally:
            services.dispose()
    typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, separators=(",", ":")))
    raise typer.Exit(0 if report.success else EXIT_FAILED)


@cli.command()
def sweep() -> None:
    """Expire overdue leases now: their entries go back to pending. Prints how many expired."""
    from app.queues.leases import sweep_expired_leases

    with database(command_settings()) as settings:
        # Operator commands use the direct connection: they repeat statements, which psycopg
        # prepares, and prepared statements do not survive a transaction pooler.
        engine = create_engine(settings.direct_url or settings.require_database())
        expired = 0
        try:
            while True:
                with engine.begin() as conn:
                    batch = sweep_expired_leases(conn)
                expired += batch
                if batch == 0:
                    break
        finally:
            engine.dispose()
    typer.echo(str(expired))
