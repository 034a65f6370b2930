"""The calling rules' commands: ``suppression import`` and ``report compliance`` (SPEC 7.3)."""

from __future__ import annotations

import csv
import logging
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from sqlalchemy import create_engine

from app.cli.base import (
    EXIT_CONFIG,
    EXIT_FAILED,
    cli,
    command_settings,
    database,
    terminal_progress,
)

log = logging.getLogger(__name__)


suppression_cli = typer.Typer(help="The suppression (do-not-call) list.", no_args_is_help=True)
cli.add_typer(suppression_cli, name="suppression")

EXIT_UNREADABLE = 2


@suppression_cli.command("import")
def suppression_import(
    file: Annotated[Path, typer.Argument(help="one number a line, or a CSV with a 'phone' column")],
) -> None:
    """Add a file's numbers to the suppression list; prints "added N, already present N,
    unparseable N" on standard output (the line numbers of unparseable numbers, never the
    numbers, on standard error).

    Exits 0 when every number parsed, 1 when some did not, 2 when the file cannot be read.
    """
    from app.rules.suppression import SuppressionList

    try:
        size = file.stat().st_size
        with file.open("rb"):
            pass
        if not file.is_file():
            raise IsADirectoryError
    except OSError:
        typer.echo("callqueue: the file cannot be read", err=True)
        raise typer.Exit(EXIT_UNREADABLE) from None
    with database(command_settings()) as settings:
        hashing = SuppressionList.from_settings(settings)
        engine = create_engine(settings.require_database())
        try:
            with _file_progress(size, "importing") as progress:
                result = hashing.import_file(engine, file, progress=progress)
        finally:
            engine.dispose()
    typer.echo(
        f"added {result.added}, already present {result.already_present},"
        f" unparseable {result.unparseable}"
    )
    if result.unparseable:
        shown = ", ".join(map(str, result.unparseable_lines[:50]))
        more = " ..." if len(result.unparseable_lines) > 50 else ""
        typer.echo(f"callqueue: unparseable numbers on lines {shown}{more}", err=True)
        raise typer.Exit(EXIT_FAILED)


@contextmanager
def _file_progress(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """The file's bytes read, on a terminal."""
    with terminal_progress(of_bytes=True) as bar:
        if bar is None:
            yield None
            return
        task = bar.add_task(label, total=total)
        yield lambda done: bar.update(task, completed=done)


report_cli = typer.Typer(help="Reports from the ledger.", no_args_is_help=True)
cli.add_typer(report_cli, name="report")


@report_cli.command("compliance")
def report_compliance(
    first: Annotated[str, typer.Option("--from", help="first day, YYYY-MM-DD")],
    last: Annotated[str, typer.Option("--to", help="last day (inclusive), YYYY-MM-DD")],
    as_csv: Annotated[bool, typer.Option("--csv", help="CSV instead of a table")] = False,
) -> None:
    """Per day: hand-outs outside calling hours, over the attempt caps, and refused for
    suppression or a cap (the API's GET /api/reports/compliance)."""
    from app.errors import InvalidInput
    from app.rules.compliance import compliance_report, parse_period_dates

    try:
        day_from, day_to = parse_period_dates(first, last)
    except InvalidInput as exc:
        # The API's message names the query parameter; here it is an option.
        detail = exc.detail.replace("'from'", "--from").replace("'to'", "--to")
        typer.echo(f"callqueue: {detail}", err=True)
        raise typer.Exit(EXIT_CONFIG) from None
    with database(command_settings()) as settings:
        engine = create_engine(settings.require_database())
        try:
            with engine.connect() as conn:
                report = compliance_report(conn, settings, day_from, day_to)
        finally:
            engine.dispose()
    names = [c["name"] for c in report["columns"]]
    if as_csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["date", *names])
        for day in report["days"]:
            writer.writerow([day["date"], *(day[n] for n in names)])
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Compliance {report['from']} to {report['to']} ({report['timezone']};"
        f" caps {report['caps']['per_day']}/day, {report['caps']['per_week']}/week)",
        show_footer=True,
    )
    table.add_column("date", footer="total")
    for name in names:
        table.add_column(
            name.replace("_", " "), justify="right", footer=str(report["totals"][name])
        )
    for day in report["days"]:
        table.add_row(day["date"], *(str(day[n]) for n in names))
    console = Console() if sys.stdout.isatty() else Console(width=200, no_color=True)
    console.print(table)
