"""The ``callqueue`` command (SPEC 6). Every command reads the same settings as the server.

Without DATABASE_URL the commands use the embedded PostgreSQL in DATA_DIR (started, created and
migrated on demand, stopped on exit unless another process still uses it), in development mode.
Human-facing messages and logs go to standard error; standard output carries only a command's
result (the population report), so it can be piped.

Exit codes: 0 success, 1 failure, 2 bad configuration (or, for ``scores import``, a file that
cannot be imported), 75 (EX_TEMPFAIL) another population or discovery is running.
"""

from __future__ import annotations

import atexit
import csv
import json
import logging
import os
import secrets
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from pydantic import SecretStr
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from app.config import MIN_CRON_SECRET_LENGTH, Settings, get_settings
from app.errors import (
    CallqueueError,
    ConfigError,
    DiscoveryRunning,
    PopulationRunning,
    UnreadableFile,
)
from app.logs import configure_logging
from app.queues.kinds import QueueType

log = logging.getLogger(__name__)


class Role(StrEnum):
    AGENT = "agent"
    SUPERVISOR = "supervisor"
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


def main() -> None:
    """Console entry point: configuration and domain errors become one line and an exit code."""
    # SIGTERM stops a command like Ctrl-C does, so `finally` blocks run and the embedded
    # PostgreSQL is always let go of.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        cli()
    except ConfigError as exc:
        typer.echo(f"callqueue: {exc.detail}", err=True)
        sys.exit(EXIT_CONFIG)
    except CallqueueError as exc:
        typer.echo(f"callqueue: {exc.detail}", err=True)
        sys.exit(EXIT_FAILED)
    except SQLAlchemyError as exc:
        typer.echo(f"callqueue: database error: {_first_line(exc)}", err=True)
        sys.exit(EXIT_FAILED)


def _first_line(exc: SQLAlchemyError) -> str:
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


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

    log.info("migrate.started", extra={"database": _display_url(url)})
    command.upgrade(alembic_config(url), "head")
    log.info("migrate.finished")


def _display_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def _with_dev_suppression_key(settings: Settings) -> Settings:
    """Outside production without SUPPRESSION_KEY: the key kept in DATA_DIR, handed to the
    workers through the environment like the cron secret, so every worker hashes alike."""
    from app.rules.suppression import resolve_key

    key = resolve_key(settings).decode()
    return settings.model_copy(update={"suppression_key": SecretStr(key)})


def _dev_cron_secret(data_dir: Path) -> str:
    """A development secret kept in DATA_DIR (mode 0600), so restarts keep the curl working."""
    path = data_dir / CRON_SECRET_FILE
    if path.exists():
        secret = path.read_text().strip()
        if len(secret) >= MIN_CRON_SECRET_LENGTH:
            return secret
    data_dir.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_urlsafe(32)
    tmp = path.with_name(f".{CRON_SECRET_FILE}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(secret + "\n")
    os.replace(tmp, path)
    log.info("serve.cron_secret_generated", extra={"path": str(path)})
    return secret


# -- commands ------------------------------------------------------------------------------------


@cli.command()
def serve(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    migrate: Annotated[
        bool, typer.Option("--migrate", help="migrate DATABASE_URL before starting")
    ] = False,
    demo: Annotated[
        bool, typer.Option("--demo", help="seed a demo data set into an empty database")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
) -> None:
    """Run the HTTP service (embedded PostgreSQL in DATA_DIR when DATABASE_URL is not set)."""
    _metrics_dir()
    settings = command_settings()
    # Production fails closed before anything is touched: no migration, no seeding.
    settings.check_server_ready()
    try:
        with database(settings) as effective:
            if settings.database_url and migrate:
                migrate_database(effective.require_database())
            if effective.app_env != "production" and effective.cron_secret is None:
                secret = _dev_cron_secret(effective.data_dir.expanduser().resolve())
                effective = effective.model_copy(update={"cron_secret": SecretStr(secret)})
            if effective.app_env != "production" and effective.suppression_key is None:
                effective = _with_dev_suppression_key(effective)
            tokens: dict[str, str] = {}
            if demo:
                _seed_demo(effective)
                tokens = _demo_agents(effective)
                _seed_demo_callbacks(effective)
            _export(effective)
            _banner(effective, host, port, tokens)
            _run_uvicorn(host, port, workers)
    except KeyboardInterrupt:
        pass
    log.info("serve.stopped")


def _metrics_dir() -> None:
    """Give the workers one fresh directory for prometheus-client's multiprocess files, so
    /metrics sums every worker. Set before app.metrics is imported anywhere in this process."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return
    path = Path(tempfile.mkdtemp(prefix="callqueue-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    atexit.register(shutil.rmtree, path, ignore_errors=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _export(settings: Settings) -> None:
    """Hand the effective settings to uvicorn's app (and its worker processes) via the
    environment, the one channel every worker reads."""
    assert settings.database_url is not None
    os.environ["DATABASE_URL"] = settings.database_url
    os.environ["APP_ENV"] = settings.app_env
    if settings.cron_secret is not None:
        os.environ["CRON_SECRET"] = settings.cron_secret.get_secret_value()
    if settings.suppression_key is not None:
        os.environ["SUPPRESSION_KEY"] = settings.suppression_key.get_secret_value()
    get_settings.cache_clear()


def _seed_demo(settings: Settings) -> None:
    from app.demo import seed_demo
    from app.rules.calling import update_calling_rules
    from app.rules.suppression import SuppressionList

    if settings.app_env == "production":
        raise ConfigError("--demo writes made-up people: it needs APP_ENV=development")
    store = create_engine(settings.require_database())
    replica_url = settings.replica_url
    assert replica_url is not None
    replica = create_engine(replica_url)
    try:
        with store.connect() as conn:
            if not conn.execute(
                text("SELECT to_regclass('user_call_scores') IS NOT NULL")
            ).scalar():
                raise ConfigError(
                    "the database is not migrated: run `callqueue migrate` or `serve --migrate`"
                )
            leads = conn.execute(text("SELECT count(*) FROM user_call_scores")).scalar_one()
        if leads:
            log.info(
                "demo.skipped", extra={"reason": "user_call_scores is not empty", "leads": leads}
            )
            return
        log.info("demo.seeding")
        counts = seed_demo(store, replica, suppression=SuppressionList.from_settings(settings))
        # Usable at any hour: the demo's calling hours are 'always', set as a supervisor would
        # (audited, shown by GET /api/admin/calling-rules, changed with PUT).
        with store.begin() as conn:
            update_calling_rules(conn, settings, {"hours": "always"}, None)
        log.info("demo.seeded", extra=counts.as_dict())
    finally:
        store.dispose()
        replica.dispose()


def _seed_demo_callbacks(settings: Settings) -> None:
    """The demo's callbacks, booked by the demo agents (so after them); once."""
    from app.demo import seed_demo_callbacks

    store = create_engine(settings.require_database())
    try:
        booked = seed_demo_callbacks(store)
    finally:
        store.dispose()
    if booked:
        log.info("demo.callbacks_booked", extra={"callbacks": booked})


DEMO_AGENTS = (
    ("demo-supervisor", "supervisor"),
    ("demo-agent-1", "agent"),
    ("demo-agent-2", "agent"),
    ("demo-scorer", "scorer"),
)
DEMO_TOKENS_FILE = "demo_tokens.json"


def _demo_agents(settings: Settings) -> dict[str, str]:
    """Demo agents' tokens, kept in DATA_DIR (mode 0600) so a restart can print them again:
    only a token's hash is in the database."""
    from app.agents import create_agent

    path = settings.data_dir.expanduser().resolve() / DEMO_TOKENS_FILE
    tokens: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    engine = create_engine(settings.require_database())
    try:
        with engine.begin() as conn:
            existing = set(conn.execute(text("SELECT name FROM agents")).scalars())
            for name, role in DEMO_AGENTS:
                if name not in existing:
                    tokens[name] = create_agent(conn, name, role)
    finally:
        engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(tokens, handle)
    return tokens


def _banner(settings: Settings, host: str, port: int, tokens: dict[str, str]) -> None:
    shown_host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    base = f"http://{shown_host}:{port}"
    if settings.app_env == "production":
        bearer = '"Authorization: Bearer $CRON_SECRET"'
        secret_line = "  cron secret:  (CRON_SECRET from the environment)"
    else:
        assert settings.cron_secret is not None
        secret = settings.cron_secret.get_secret_value()
        bearer = f'"Authorization: Bearer {secret}"'
        secret_line = f"  cron secret:  {secret}"
    lines = [
        "",
        f"callqueue ({settings.app_env}) listening on {base}",
        f"  database:     {_display_url(settings.require_database())}",
        secret_line,
        f"  console:      {base}/console (agents), {base}/console/supervisor (supervisors)",
        f"  API docs:     {base}/docs",
        "",
        "  populate both queues now (the hourly scheduler's call):",
        f"    curl -sS -H {bearer} {base}{CRON_PATH}",
        "  health check:",
        f"    curl -sS -X POST -H {bearer} {base}{CRON_PATH}",
        "  discover new leads on the replica now (the scheduler does it at start, then every"
        f" {settings.discovery_interval_minutes} minutes):",
        f"    curl -sS -H {bearer} {base}/api/cron/discover",
        "",
    ]
    if tokens and settings.app_env != "production":
        lines += ["  demo tokens, to paste into the console (also in DATA_DIR/demo_tokens.json):"]
        lines += [f"    {name}: {token}" for name, token in tokens.items()]
        agent = tokens.get("demo-agent-1")
        if agent:
            lines += [
                "  the next user to call, as demo-agent-1:",
                f'    curl -sS -X POST -H "Authorization: Bearer {agent}"'
                f" {base}/api/queues/unsigned_users/next-user",
            ]
        scorer = tokens.get("demo-scorer")
        if scorer:
            lines += [
                "  push a score as demo-scorer (README, Feeding callqueue):",
                f'    curl -sS -X PUT -H "Authorization: Bearer {scorer}"'
                " -H 'Content-Type: application/json'"
                """ -d '{"scores": [{"user_id": 900004, "current_score": 0}]}'"""
                f" {base}/api/scores",
            ]
        lines += [""]
    typer.echo("\n".join(lines), err=True)


# glibc gives each thread that allocates its own malloc arena (up to 8 per core). A worker's
# request threads and its population's replica readers would each keep one, and memory freed
# in one arena is not reused by another: resident memory creeps up under load. Two arenas keep
# it flat at no measurable cost. glibc reads it at process start, so setting it here reaches the
# workers spawned by `--workers 2` and more; a single-process server started before it was set,
# so set it in the environment for that (the Docker image does).
MALLOC_ARENAS = "2"


def _run_uvicorn(host: str, port: int, workers: int) -> None:
    import uvicorn

    os.environ.setdefault("MALLOC_ARENA_MAX", MALLOC_ARENAS)
    # log_config=None: uvicorn's loggers propagate to the root handler the app configures, so
    # access and error lines share the app's format (JSON lines in production).
    uvicorn.run("app.main:app", host=host, port=port, workers=workers, log_config=None)


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
    from app.services import Services

    with database(command_settings()) as settings:
        services = Services.build(settings)
        try:
            report = services.population().run(trigger="cli", queue=queue, dry_run=dry_run)
        except PopulationRunning as exc:
            typer.echo(f"callqueue: {exc.detail}", err=True)
            raise typer.Exit(EXIT_POPULATION_RUNNING) from None
        finally:
            services.dispose()
    # Serialised as the route's JSONResponse does, so scripts can treat both alike.
    typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, separators=(",", ":")))
    raise typer.Exit(0 if report.success else EXIT_FAILED)


@cli.command()
def discover() -> None:
    """Discover new leads on the replica now; prints the cron route's JSON report on standard
    output (progress in the logs, on standard error).

    Exits 0 when the run succeeded, 1 when it failed (a rerun resumes where it stopped), 75 when
    another discovery is running.
    """
    from app.services import Services

    with database(command_settings()) as settings:
        services = Services.build(settings)
        try:
            report = services.discovery().run(trigger="cli")
        except DiscoveryRunning as exc:
            typer.echo(f"callqueue: {exc.detail}", err=True)
            raise typer.Exit(EXIT_POPULATION_RUNNING) from None
        finally:
            services.dispose()
    typer.echo(json.dumps(report.as_dict(), ensure_ascii=False, separators=(",", ":")))
    raise typer.Exit(0 if report.success else EXIT_FAILED)


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
    """A progress bar on standard error when it is a terminal; nothing in a pipe or a log."""
    from rich.console import Console

    console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task(f"importing {file.name}", total=None)

        def update(done: int, total: int) -> None:
            progress.update(task, completed=done, total=total)

        yield update


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


agents_cli = typer.Typer(help="Manage agents and their API tokens.", no_args_is_help=True)
cli.add_typer(agents_cli, name="agents")


@contextmanager
def _store() -> Iterator[Engine]:
    with database(command_settings()) as settings:
        engine = create_engine(settings.direct_url or settings.require_database())
        try:
            yield engine
        finally:
            engine.dispose()


@agents_cli.command("create")
def agents_create(
    name: Annotated[str, typer.Option(help="a unique name, e.g. the person's login")],
    role: Annotated[
        Role, typer.Option(help="agent, supervisor, or scorer (may only PUT /api/scores)")
    ] = Role.AGENT,
) -> None:
    """Create an agent; prints its token, alone, on standard output (it is not shown again)."""
    from app.agents import create_agent

    if not name.strip() or len(name) > 200:
        raise ConfigError("--name must be 1 to 200 characters")
    with _store() as engine, engine.begin() as conn:
        token = create_agent(conn, name.strip(), role.value)
    typer.echo(token)


@agents_cli.command("list")
def agents_list() -> None:
    """Agents, one per line: id, name, role, active or deactivated, creation time."""
    from app.agents import list_agents

    with _store() as engine, engine.connect() as conn:
        for agent in list_agents(conn):
            state = "active" if agent.is_active else "deactivated"
            typer.echo(
                f"{agent.id}\t{agent.name}\t{agent.role}\t{state}\t{agent.created_at.isoformat()}"
            )


@agents_cli.command("deactivate")
def agents_deactivate(name: Annotated[str, typer.Argument(help="the agent's name")]) -> None:
    """Deactivate an agent: its token stops working at once; its history stays."""
    from app.agents import deactivate_agent

    with _store() as engine, engine.begin() as conn:
        deactivate_agent(conn, name)
    typer.echo(f"deactivated {name}", err=True)


# -- calling rules and compliance (issue 14) -----------------------------------------------------

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
    """A rich progress bar on standard error when it is a terminal; nothing otherwise (logs
    and pipes get the summary line only)."""
    if not sys.stderr.isatty():
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    ) as bar:
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
