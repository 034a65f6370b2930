"""A PgBouncer in transaction pooling mode in front of the tests' PostgreSQL.

CI (.ci/run) starts one with ``python -m tests.pgbouncer --port PORT`` and exports
PGBOUNCER_TEST_URL; without that variable the PgBouncer tests start their own when the
``pgbouncer`` binary is installed (Debian's package), and are skipped otherwise, or fail under
CALLQUEUE_REQUIRE_PGBOUNCER=1 so CI cannot silently lose them.

PgBouncer refuses to run as root: as root, it runs as the ``postgres`` system user.

Two database entries: ``*`` forwards any database name to the server, and its server connections
carry the service's session bounds (``connect_query``), as the README tells operators to set
them; ``cq_unbounded`` (the server's ``postgres`` database) has none, for the tests that show the
service refusing such a pooler. It drops the ``options`` and ``application_name`` startup
parameters (``ignore_startup_parameters``), a common setting: a client's session bounds never
reach the server through it. The pool is small (8 server connections per database), so the
service's connections are multiplexed over fewer server connections, as in production.
"""

from __future__ import annotations

import argparse
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BOUNDS_QUERY = (
    "SET statement_timeout = 60000; SET lock_timeout = 5000;"
    " SET idle_in_transaction_session_timeout = 120000; SET TimeZone = UTC"
)
POOL_SIZE = 8


def config(directory: Path, port: int, pg_host: str, pg_port: int) -> str:
    server = f"host={pg_host} port={pg_port}"
    return f"""[databases]
* = {server} connect_query='{BOUNDS_QUERY}'
cq_unbounded = {server} dbname=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/userlist.txt
pool_mode = transaction
default_pool_size = {POOL_SIZE}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 1000
max_db_connections = 0
server_reset_query =
ignore_startup_parameters = extra_float_digits,options,application_name
server_idle_timeout = 30
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
admin_users = postgres
"""


def binary() -> str | None:
    return shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if os.path.exists("/usr/sbin/pgbouncer") else None
    )


@dataclass
class Bouncer:
    proc: subprocess.Popen[bytes]
    directory: Path
    port: int

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # runuser passes it on
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start(port: int, pg_host: str = "127.0.0.1", pg_port: int = 5432) -> Bouncer:
    """Start PgBouncer in the foreground (as ``postgres`` when we are root); returns once it
    accepts connections."""
    exe = binary()
    if exe is None:
        raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
    directory = Path(tempfile.mkdtemp(prefix="callqueue-pgbouncer-"))
    (directory / "userlist.txt").write_text('"postgres" ""\n')
    (directory / "pgbouncer.ini").write_text(config(directory, port, pg_host, pg_port))
    command = [exe, str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for path in (directory, *directory.iterdir()):
            os.chown(path, user.pw_uid, user.pw_gid)
        command = ["runuser", "-u", "postgres", "--", *command]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = directory / "pgbouncer.log"
            raise RuntimeError(
                f"pgbouncer exited with {proc.returncode}: "
                + (log.read_text()[-2000:] if log.exists() else "")
            )
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return Bouncer(proc, directory, port)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("pgbouncer did not start listening within 15 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    args = parser.parse_args()
    bouncer = start(args.port, args.pg_host, args.pg_port)
    stopping = False

    def on_signal(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping and bouncer.proc.poll() is None:
        time.sleep(0.2)
    bouncer.stop()


if __name__ == "__main__":
    main()
