"""``callqueue users erase|export`` and ``callqueue retention run`` (SPEC 8.3). Run by the
operator at the command line: audited with no admin."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated

import typer
from sqlalchemy import create_engine

from app.cli.base import cli, command_settings, database, terminal_progress
from app.privacy.retention import Progress

if TYPE_CHECKING:
    from rich.progress import TaskID

users_cli = typer.Typer(help="A person's data: erasure and access requests.", no_args_is_help=True)
cli.add_typer(users_cli, name="users")
retention_cli = typer.Typer(help="Retention of notes and the ledger.", no_args_is_help=True)
cli.add_typer(retention_cli, name="retention")

UserId = Annotated[int, typer.Argument(min=1, help="the claims platform's user id")]


@users_cli.command("erase")
def users_erase(user_id: UserId) -> None:
    """Erase everything held about a person and keep them from coming back; prints the counts
    per table as JSON on standard output."""
    from app.privacy.erasure import erase

    with database(command_settings()) as settings:
        engine = create_engine(settings.require_database())
        try:
            with engine.begin() as conn:
                done = erase(
                    conn, user_id, agent_id=None, grace_minutes=settings.callback_grace_minutes
                )
        finally:
            engine.dispose()
    typer.echo(json.dumps(done.as_dict(), indent=2))


@users_cli.command("export")
def users_export(user_id: UserId) -> None:
    """Everything held about a person, as one JSON document on standard output (for an access
    request: it holds their notes; keep it as such)."""
    from app.privacy.export import dumps, export
    from app.services import Services

    with database(command_settings()) as settings:
        services = Services.build(settings)
        try:
            with services.engine.begin() as conn:
                document = export(
                    conn, services.replica, services.suppression, user_id, agent_id=None
                )
        finally:
            services.dispose()
    typer.echo(dumps(document))


STAGES = {"days": "keeping the days' compliance figures", "notes": "clearing notes"}


@contextmanager
def _stages() -> Iterator[Progress | None]:
    """Each stage's rows done, on a terminal."""
    with terminal_progress(of_bytes=False) as bar:
        if bar is None:
            yield None
            return
        tasks: dict[str, TaskID] = {}

        def show(stage: str, done: int, total: int | None) -> None:
            if stage not in tasks:
                label = STAGES.get(stage, f"deleting old {stage}")
                tasks[stage] = bar.add_task(label, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        yield show


@retention_cli.command("run")
def retention_run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be cleared and deleted")
    ] = False,
) -> None:
    """Clear notes past RETENTION_NOTES_DAYS and delete the ledger past RETENTION_LEDGER_DAYS
    (its days' compliance figures kept first); prints the figures as JSON on standard
    output."""
    from app.privacy.retention import Retention

    with database(command_settings()) as settings:
        engine = create_engine(settings.require_database())
        try:
            with _stages() as progress:
                report = Retention(engine, settings, on_progress=progress).run(dry_run=dry_run)
        finally:
            engine.dispose()
    typer.echo(json.dumps(report.as_dict(), indent=2))
