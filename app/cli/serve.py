"""``callqueue serve``: the service on uvicorn, on the embedded PostgreSQL when there is no
``DATABASE_URL``, with ``--demo`` seeding a realistic data set and printing how to call it."""

from __future__ import annotations

import atexit
import json
import logging
import os
import secrets
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr
from sqlalchemy import create_engine, text

from app.cli.base import (
    CRON_PATH,
    CRON_SECRET_FILE,
    cli,
    command_settings,
    database,
    display_url,
    migrate_database,
)
from app.config import MIN_CRON_SECRET_LENGTH, Settings, get_settings
from app.errors import (
    ConfigError,
)

log = logging.getLogger(__name__)


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
            credentials = DemoCredentials({}, {})
            if demo:
                _seed_demo(effective)
                credentials = _demo_people(effective)
                _seed_demo_callbacks(effective)
            if effective.public_url is None and effective.app_env != "production":
                shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
                effective = effective.model_copy(update={"public_url": f"http://{shown}:{port}"})
            _export(effective)
            _banner(effective, host, port, credentials)
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
    if settings.public_url is not None:
        os.environ["PUBLIC_URL"] = settings.public_url
    get_settings.cache_clear()


def _seed_demo(settings: Settings) -> None:
    from app.demo.seed import seed_demo
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
    from app.demo.seed import seed_demo_callbacks

    store = create_engine(settings.require_database())
    try:
        booked = seed_demo_callbacks(store)
    finally:
        store.dispose()
    if booked:
        log.info("demo.callbacks_booked", extra={"callbacks": booked})


@dataclass(frozen=True)
class DemoPerson:
    name: str
    email: str
    display_name: str
    role: str
    queues: tuple[str, ...] = ("unsigned_users", "outstanding_requests")
    # A password to sign in to the console with (a scorer is a machine: a token only).
    signs_in: bool = True


DEMO_PEOPLE = (
    DemoPerson("demo-admin", "admin@example.com", "Ada Admin", "admin"),
    DemoPerson("demo-supervisor", "supervisor@example.com", "Sam Supervisor", "supervisor"),
    DemoPerson("demo-agent-1", "agent1@example.com", "Alex Agent", "agent"),
    DemoPerson("demo-agent-2", "agent2@example.com", "Bea Agent", "agent"),
    # Allowed the unsigned users' queue only: the other is refused (403 QueueNotAllowed).
    DemoPerson("demo-agent-3", "agent3@example.com", "Cy Agent", "agent", ("unsigned_users",)),
    DemoPerson("demo-scorer", "scorer@example.com", "Scoring job", "scorer", signs_in=False),
)
DEMO_CREDENTIALS_FILE = "demo_credentials.json"


@dataclass
class DemoCredentials:
    """The demo people's passwords (by email) and API tokens (by name), kept in DATA_DIR (mode
    0600) so a restart can print them again: the database has only their hashes."""

    passwords: dict[str, str]
    tokens: dict[str, str]


def _demo_people(settings: Settings) -> DemoCredentials:
    from app.auth.passwords import hash_password
    from app.auth.people import create_agent

    path = settings.data_dir.expanduser().resolve() / DEMO_CREDENTIALS_FILE
    kept = json.loads(path.read_text()) if path.exists() else {}
    found = DemoCredentials(kept.get("passwords", {}), kept.get("tokens", {}))
    engine = create_engine(settings.require_database())
    try:
        with engine.begin() as conn:
            existing = set(conn.execute(text("SELECT name FROM agents")).scalars())
            for person in DEMO_PEOPLE:
                if person.name in existing:
                    continue
                found.tokens[person.name] = create_agent(conn, person.name, person.role)
                password = secrets.token_urlsafe(12) if person.signs_in else None
                conn.execute(
                    text(
                        "UPDATE agents SET email = :email, display_name = :display,"
                        " allowed_queues = :queues, password_hash = :hash WHERE name = :name"
                    ),
                    {
                        "email": person.email,
                        "display": person.display_name,
                        "queues": list(person.queues),
                        "hash": hash_password(password) if password else None,
                        "name": person.name,
                    },
                )
                if password:
                    found.passwords[person.email] = password
    finally:
        engine.dispose()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"passwords": found.passwords, "tokens": found.tokens}, handle)
    return found


def _banner(settings: Settings, host: str, port: int, credentials: DemoCredentials) -> None:
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
        f"  database:     {display_url(settings.require_database())}",
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
    tokens = credentials.tokens
    if credentials.passwords and settings.app_env != "production":
        lines += [
            f"  demo people, to sign in to {base}/console with"
            f" (also in DATA_DIR/{DEMO_CREDENTIALS_FILE}):"
        ]
        lines += [
            f"    {person.email:<24} {credentials.passwords[person.email]:<18} {person.role}"
            + ("" if len(person.queues) > 1 else f", {person.queues[0]} only")
            for person in DEMO_PEOPLE
            if person.email in credentials.passwords
        ]
    if tokens and settings.app_env != "production":
        lines += ["  demo API tokens, for scripts:"]
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
