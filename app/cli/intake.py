"""``callqueue scores import``: the scores API's semantics for a CSV file (SPEC 7.1)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer

from app.cli.base import (
    EXIT_CONFIG,
    EXIT_FAILED,
    cli,
    command_settings,
    database,
    terminal_progress,
)
from app.errors import (
    UnreadableFile,
)

log = logging.getLogger(__name__)


scores_cli = typer.Typer(help="Feed leads' scores from upstream.", no_args_is_help=True)
cli.add_typer(scores_cli, name="scores")


@scores_cli.command("import")
def scores_import(
    file: Annotated[Path, typer.Argument(help="CSV: user_id,current_score[,base_score,...]")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check and count, write nothing")
    ] = False,
) -> None:
    """Upsert scores from a CSV file, as PUT /api/scores does, in batches of 10,000 lines.

    The header names the columns: user_id and current_score, and any of base_score,
    outcome_penalty_score, time_penalty_score. Rejected lines go to NAME.rejected.csv beside the
    file, with their line numbers (the header is line 1) and reasons. Prints one summary line.
    Exits 0 when every line went in, 1 when some were rejected (or the import stopped early),
    2 when the file cannot be imported at all.
    """
    from app.intake.csv_import import import_scores
    from app.services import Services

    with database(command_settings()) as settings:
        services = Services.build(settings)
        try:
            with _progress_bar(file) as on_progress:
                summary = import_scores(
                    services.engine,
                    services.replica,
                    file,
                    dry_run=dry_run,
                    on_progress=on_progress,
                )
        except UnreadableFile as exc:
            typer.echo(f"callqueue: {file}: {exc.detail}", err=True)
            raise typer.Exit(EXIT_CONFIG) from None
        finally:
            services.dispose()
    for shown in summary.shown:
        user = "" if shown.user_id is None else f" (user {shown.user_id})"
        typer.echo(f"  line {shown.index}{user}: {shown.error}", err=True)
    if summary.rejected > len(summary.shown) and summary.dry_run:
        typer.echo(f"  ... and {summary.rejected - len(summary.shown):,} more", err=True)
    typer.echo(summary.line())
    raise typer.Exit(0 if summary.complete else EXIT_FAILED)


@contextmanager
def _progress_bar(file: Path) -> Iterator[Callable[[int, int], None] | None]:
    """The file's bytes read, on a terminal."""
    with terminal_progress(of_bytes=True) as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task(f"importing {file.name}", total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update
