"""The ``callqueue`` command (SPEC 6). Every command reads the same settings as the server.

Without DATABASE_URL the commands use the embedded PostgreSQL in DATA_DIR (started, created and
migrated on demand, stopped on exit unless another process still uses it), in development mode.
Human-facing messages and logs go to standard error; standard output carries only a command's
result (the population report), so it can be piped.

Exit codes: 0 success, 1 failure, 2 bad configuration (or, for ``scores import``, a file that
cannot be imported), 75 (EX_TEMPFAIL) another population or discovery is running.
"""

from __future__ import annotations

import signal
import sys

import typer
from sqlalchemy.exc import SQLAlchemyError

# Each module adds its commands to the application as it is imported.
from app.cli import intake, people, privacy, rules, runs, serve, webhooks  # noqa: F401
from app.cli.base import EXIT_CONFIG, EXIT_FAILED, cli, interrupt
from app.errors import CallqueueError, ConfigError
from app.logs import describe_error


def main() -> None:
    """Console entry point: configuration and domain errors become one line and an exit code."""
    # SIGTERM stops a command like Ctrl-C does, so `finally` blocks run and the embedded
    # PostgreSQL is always let go of.
    signal.signal(signal.SIGTERM, interrupt)
    try:
        cli()
    except ConfigError as exc:
        typer.echo(f"callqueue: {exc.detail}", err=True)
        sys.exit(EXIT_CONFIG)
    except CallqueueError as exc:
        typer.echo(f"callqueue: {exc.detail}", err=True)
        sys.exit(EXIT_FAILED)
    except SQLAlchemyError as exc:
        typer.echo(f"callqueue: {describe_error(exc)}", err=True)
        sys.exit(EXIT_FAILED)
