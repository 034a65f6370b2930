"""Claim benchmark (issue 3, "Performance"): 64 agents over HTTP against a real two-worker server.

Run it from the repository root against the machine's PostgreSQL (py-spy is optional:
``.venv/bin/pip install py-spy``; without it the profile section says so)::

    .venv/bin/python -m bench.claims            # full run: 100,000 entries, about 4 minutes
    .venv/bin/python -m bench.claims --quick    # 10,000 entries, 5 s per mode, about 1 minute
    .venv/bin/python -m bench.claims --no-profile --keep   # skip py-spy, keep the databases
    .venv/bin/python -m bench.claims --callbacks  # also with and without callbacks (issue 13)
    .venv/bin/python -m bench.claims --rules      # also with the rules off and on (issue 14)

What it does, in order:

1. Builds two scratch databases on ``--server`` (default: the local server as ``postgres``): a
   store ``cq_bench_claims_store`` migrated with Alembic and a replica ``cq_bench_claims_replica``
   made with ``replica_metadata.create_all``. All rows come from server-side ``INSERT ... SELECT
   FROM generate_series``: ``--entries`` x 1.02 users, each with one open claim, a pending
   ``signature`` requirement and a phone number in 07700 900xxx; 99% have no signature (so they
   classify ``unsigned_users``), 1% have one (reclassified away by the population). Every score
   row says ``unsigned_users``, is active, due now and past the cooling period. The ledger gets a
   month of history (86,400 completed assignments and 1,728 kept callbacks, all finished more
   than a week ago, outside the attempt caps' window), as a production ledger has: on an empty
   ledger PostgreSQL would plan the claim functions' statements (cached per session) as
   sequential scans of a table that then grows for the whole run.
2. Runs one population in this process (``Population.run`` with ``QUEUE_SIZE_LIMIT`` =
   ``--entries``), creates 64 agents with ``create_agent``, then VACUUMs and checkpoints (the
   server runs with autovacuum off).
3. Starts ``uvicorn app.main:app --workers 2 --no-access-log --timeout-keep-alive 75`` on a free
   port (validation on, scheduler off, ``LOG_LEVEL=WARNING``, ``PROMETHEUS_MULTIPROC_DIR`` in a
   temporary directory) with ``--pool-size``/``--max-overflow`` (default 10 + 0 per worker: the
   service's default ``DB_POOL_SIZE``, without the overflow) and prints the connection budget
   and how the agents' connections fell on the workers.
4. Drives 64 agents, one ``aiohttp.ClientSession`` (one keep-alive connection) each, on uvloop; a
   cycle is ``POST /api/queues/unsigned_users/next-user`` then ``POST
   /api/assignments/{id}/complete`` with ``{"outcome": "no_answer"}``. Modes: a warm-up (one
   cycle per agent, not counted); fixed rates of 10, 50 and 100 cycles/s (open loop, cycle k
   starts at k / rate on agent k mod 64; cycles more than 1.25x the duration behind schedule are
   not started); flat out; flat out again while py-spy (``--gil --subprocesses``) samples both
   workers; the HTTP floor (``GET /healthz``, an async route without I/O, from 64 agents and from
   one); one agent alone (unloaded latency).
   With ``--callbacks`` (issue 13, SPEC 7.2), then the same workload without and with callbacks,
   alternating, ``--callback-rounds`` pairs (default 2: without, with, with, without): each run
   is ``--callback-rate`` (50) cycles/s for the rates' duration, then flat out for its duration,
   after a VACUUM of the queue, ``assignments``, ``callbacks`` and ``user_call_scores``. With
   callbacks, ``--callback-share`` (5%) of the hand-outs, every twentieth, are completed with
   ``{"outcome": "call_back", "callback_at": now + --callback-delay}`` (5 s; 2 s with
   ``--quick``), so they fall due during the run and later cycles serve them before the queue
   (``"source": "callback"``). The server keeps the service's default
   ``CALLBACK_PERSONAL_MINUTES`` (30): each callback is served by the agent who booked it, on its
   first next-user after the due time (the service looks for the agent's own due callbacks, then
   for anyone's past their personal window, then at the queue). After a run with callbacks the
   ones still open are served (each agent cycles until next-user gives it no callback; not
   counted), so none spills into the next run. The summary compares p99 next-user latency at the
   paced rate (pooled over the runs) and the flat-out ratio to the raw-SQL baseline, and prints
   how many callbacks were booked and handed out (it must be more than 0).
   With ``--rules`` (issue 14, SPEC 7.3), the same alternation (``--rules-rounds`` pairs at
   ``--rules-rate``, the paced run then flat out) with the calling rules off and on. Off: ``PUT
   /api/admin/calling-rules`` (as a supervisor) ``{"hours": "always", "holidays": []}`` and an
   empty suppression list; on: ``{"hours": "mon-sun 00:00-24:00"}`` (a weekly window open at any
   hour) with sixteen holiday dates none of which is near the run, and ``--suppressed`` (100,000)
   numbers on the list, 07911 100000 onwards (never a bench user's 07700 900xxx), hashed with
   ``SuppressionList.phone_key`` under the server's ``SUPPRESSION_KEY`` (the bench sets it) and
   written straight into the store with ``cq_suppress`` after a TRUNCATE of the list and its
   audit (``suppression_changes``); a POST of one of them must answer ``already_present``. The
   attempt caps are the service's defaults in both (3 a day, 10 a week): the queue is never
   refilled while the server runs, so each user is handed out at most once (plus once per
   callback with ``--callbacks``) and the caps stay far away. After each run the
   ``entry_invalidations`` by reason and the pending entries left are printed; the summary
   counts hand-outs refused for ``suppressed`` or ``attempt_cap`` and 204s (queue dry): they
   must be 0, else the comparison is not like for like. Afterwards the rules are off again.
5. Stops the server and replays the two routes' bodies in this process, one agent, without HTTP,
   timing each step (wall and CPU) and counting statements, pool checkouts and commits per step.
6. Resets the queue (every entry back to ``pending``, ledger emptied, VACUUM) and runs the raw-SQL
   baseline: the bare ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED) RETURNING id``
   then ``UPDATE ... SET status = 'completed'`` from 64 psycopg connections (threads,
   autocommit) flat out.

Per mode it prints cycles, achieved cycles/s, next-user and complete latency p50/p95/p99/max (ms,
at the load generator), non-2xx responses by status (with the first body of each), the mean
latency split into the app's own timing (its middleware and ``ClaimService.next_user``, scraped
from ``/metrics``) and the rest, CPU ms per cycle of the uvicorn workers, the PostgreSQL backends
of the two databases, the load generator, py-spy and everything else on the machine, transactions
per cycle, new server sessions and peak connections. Then duplicates seen from the agents' side (a
user held by two agents at overlapping times, an assignment id handed out twice: must be 0) and
the same check on the ledger; the server's log levels; the py-spy summary (steps of the cycle,
named mechanisms, layers, top frames by own and cumulative time); the in-process step breakdown;
the baseline; and a summary table with the targets (p99 under 100 ms at 50 cycles/s; flat out at
least a tenth of the baseline, aim for a fifth) and the CPU-bound ceilings of both. The load
average is printed at start and end: other work on the same machine skews every figure.

The server (and py-spy) are stopped on exit, also on Ctrl-C. The databases are dropped at the end
unless ``--keep``.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import functools
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp
import httpx
import psycopg
from alembic import command
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
STORE_DB = "cq_bench_claims_store"
REPLICA_DB = "cq_bench_claims_replica"
QUEUE = "unsigned_users"
TABLE = "unsigned_users_queue"
CRON_SECRET = "bench-claims-cron-secret-0123456789abcdefXYZ"
# The server's SUPPRESSION_KEY, which --rules hashes its suppression list with.
SUPPRESSION_KEY = "bench-claims-suppression-key-0123456789abcdefXYZ"
KEEP_ALIVE_SECONDS = 75
TARGET_P99_MS = 100.0
TARGET_RATIO, AIM_RATIO = 0.10, 0.20
ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent

# -- data -------------------------------------------------------------------------------------


def h(seed: int, modulus: int) -> str:
    """SQL for a deterministic pseudo-random integer in [0, modulus) derived from ``id``."""
    return f"mod(mod(hashint8extended(id, {seed}), {modulus}) + {modulus}, {modulus})"


# 1% of users (id % 100 = 0) have signed: they classify none and are not queued.
USERS_SQL = f"""
INSERT INTO users (id, is_enabled, current_signature_file_id, first_name, last_name,
                   phone_number, email_address, status, created_at)
SELECT id, true, CASE WHEN id % 100 = 0 THEN id * 10 + 7 END,
       'First' || id, 'Last' || id, '07700 900' || lpad((id % 1000)::text, 3, '0'),
       'user' || id || '@example.invalid', 'active',
       now() - interval '30 days' - make_interval(mins => {h(1, 500000)}::int)
  FROM generate_series(1, :m) AS id
"""
CLAIMS_SQL = """
INSERT INTO claims (id, user_id, status, created_at)
SELECT u.id, u.id, CASE WHEN u.id % 3 = 0 THEN 'OPEN' ELSE 'open' END,
       u.created_at + interval '1 hour'
  FROM users u
"""
REQUIREMENTS_SQL = """
INSERT INTO claim_requirements (id, claim_id, type, status, claim_requirement_reason, created_at)
SELECT c.id, c.id, 'signature', 'pending', NULL, c.created_at + interval '1 minute'
  FROM claims c
"""
SCORES_SQL = f"""
INSERT INTO user_call_scores (user_id, current_score, base_score, is_active, current_queue_type,
                              total_attempts, created_at)
SELECT id, floor(51 * power({h(2, 1000000)} / 1000000.0, 2))::int,
       floor(51 * power({h(2, 1000000)} / 1000000.0, 2))::int,
       true, 'unsigned_users', {h(3, 4)},
       now() - interval '1 day' - make_interval(mins => {h(4, 100000)}::int)
  FROM generate_series(1, :m) AS id
"""
RESET_SQL = f"""
UPDATE {TABLE} SET status = 'pending', assigned_to_agent = NULL, assigned_at = NULL,
       invalid_reason = NULL, updated_at = now()
 WHERE status <> 'pending'
"""
BASELINE_CLAIM = f"""
UPDATE {TABLE} SET status = 'assigned', assigned_to_agent = %(a)s, assigned_at = now()
 WHERE id = (SELECT id FROM {TABLE} WHERE status = 'pending'
              ORDER BY queue_position, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
BASELINE_DONE = f"UPDATE {TABLE} SET status = 'completed' WHERE id = %(id)s"


def db_url(server: str, name: str) -> str:
    return make_url(server).set(database=name).render_as_string(hide_password=False)


def libpq_url(url: str) -> str:
    """The same URL for psycopg itself (no SQLAlchemy driver suffix)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def admin(server: str, statements: list[str]) -> None:
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            for statement in statements:
                conn.execute(text(statement))
    finally:
        engine.dispose()


def recreate_database(server: str, name: str) -> str:
    admin(server, [f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'])
    return db_url(server, name)


def maintain(url: str, tables: str | None = None, *, checkpoint: bool = True) -> None:
    """VACUUM (this server runs with autovacuum off) and CHECKPOINT, so each phase starts even."""
    statements = [f"VACUUM (ANALYZE) {tables}" if tables else "VACUUM (ANALYZE)"]
    if checkpoint:
        statements.append("CHECKPOINT")
    admin(url, statements)


@contextlib.contextmanager
def step(label: str) -> Iterator[None]:
    t0 = time.perf_counter()
    print(f"  {label} ...", end="", flush=True)
    yield
    print(f" {time.perf_counter() - t0:.1f} s", flush=True)


# A month of the floor's past work, as a production ledger always has (the service keeps it): one
# outcome every 30 s for 30 days, ending 8 days ago (outside the attempt caps' week), and one
# callback kept for every fiftieth of them. Without it the ledger starts empty and the claim
# functions' plans, which PostgreSQL caches per session (PL/pgSQL) on the first call, are made for
# an empty table: sequential scans of a ledger that then grows for the whole run, until an
# autovacuum's ANALYZE invalidates them (about a minute in production; never in a 45 s run).
HISTORY_AGENT_SQL = (
    "INSERT INTO agents (name, role, token_hash, is_active)"
    " VALUES ('bench-history', 'agent', md5('bench-history'), true) RETURNING id"
)
HISTORY_SQL = f"""
INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score, status,
                         assigned_at, lease_expires_at, finished_at, outcome, created_at,
                         updated_at)
SELECT :agent, 1 + (g * 7919) % :users, '{QUEUE}', 'queue', 25, 'completed', t,
       t + interval '15 minutes', t + interval '3 minutes', 'no_answer', t,
       t + interval '3 minutes'
  FROM generate_series(1, :n) AS g,
       LATERAL (SELECT now() - interval '8 days' - make_interval(secs => g * 30)) AS at(t)
"""
CALLBACK_HISTORY_SQL = f"""
INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id, status, first_handed_out_at,
                       finished_at, created_at, updated_at)
SELECT 1 + (g * 104729) % :users, '{QUEUE}', t, :agent, 'completed', t, t + interval '3 minutes',
       t - interval '1 day', t + interval '3 minutes'
  FROM generate_series(1, :n) AS g,
       LATERAL (SELECT now() - interval '8 days' - make_interval(secs => g * 1500)) AS at(t)
"""
HISTORY_ROWS = 30 * 24 * 60 * 2
# The ledger rows of this run, not of the history.
THIS_RUN = "assigned_at > now() - interval '1 day'"


def build(
    server: str, entries: int, store_db: str = STORE_DB, replica_db: str = REPLICA_DB
) -> tuple[str, str, int]:
    from app.health import alembic_config
    from app.replica.schema import replica_metadata

    users = entries + entries // 50
    print(f"Building {users:,} users and score rows ({store_db}, {replica_db})")
    store_url = recreate_database(server, store_db)
    replica_url = recreate_database(server, replica_db)
    with step("alembic upgrade head"):
        command.upgrade(alembic_config(store_url), "head")
    replica = create_engine(replica_url)
    replica_metadata.create_all(replica)
    with replica.begin() as conn, step("replica users, claims, claim_requirements"):
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text(USERS_SQL), {"m": users})
        conn.execute(text(CLAIMS_SQL))
        conn.execute(text(REQUIREMENTS_SQL))
    replica.dispose()
    store = create_engine(store_url)
    with store.begin() as conn, step("store user_call_scores"):
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        conn.execute(text(SCORES_SQL), {"m": users})
    with store.begin() as conn, step(f"store ledger history ({HISTORY_ROWS:,} outcomes)"):
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        agent = conn.execute(text(HISTORY_AGENT_SQL)).scalar_one()
        history = {"agent": agent, "users": users}
        conn.execute(text(HISTORY_SQL), {**history, "n": HISTORY_ROWS})
        conn.execute(text(CALLBACK_HISTORY_SQL), {**history, "n": HISTORY_ROWS // 50})
    store.dispose()
    with step("VACUUM ANALYZE both"):
        maintain(replica_url, checkpoint=False)
        maintain(store_url, checkpoint=False)
    return store_url, replica_url, users


def populate(store_url: str, replica_url: str, entries: int) -> None:
    from app.config import load_settings
    from app.services import Services

    settings = load_settings(
        database_url=store_url,
        replica_database_url=replica_url,
        app_env="test",
        queue_size_limit=entries,
        log_level="WARNING",
    )
    services = Services.build(settings)
    try:
        t0 = time.perf_counter()
        report = services.population().run(trigger="bench-claims")
        seconds = time.perf_counter() - t0
    finally:
        services.dispose()
    q = report.queues[QUEUE]  # type: ignore[index]
    print(
        f"  population (QUEUE_SIZE_LIMIT {entries:,}): {seconds:.1f} s, {q.status}, eligible"
        f" {q.eligible:,}, invalid {q.invalid:,}, populated {q.populated:,}"
    )
    if not report.success or q.populated != entries:
        raise SystemExit(f"population did not fill the queue: {report.as_dict()}")


def create_agents(
    store_url: str, n: int, role: str = "agent", prefix: str = "bench-agent"
) -> list[str]:
    from app.agents import create_agent

    engine = create_engine(store_url)
    try:
        with engine.begin() as conn:
            return [create_agent(conn, f"{prefix}-{i:02d}", role) for i in range(n)]
    finally:
        engine.dispose()


# -- CPU and connection accounting ------------------------------------------------------------

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def machine_busy() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


class Accounting:
    """CPU seconds of the workers, our databases' backends, this process and the machine."""

    def __init__(self, monitor_url: str, dbs: tuple[str, ...]) -> None:
        self.conn = psycopg.connect(libpq_url(monitor_url), autocommit=True)
        self.dbs = list(dbs)
        self.worker_pids: list[int] = []

    def backends(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
            (self.dbs,),
        ).fetchall()
        return [r[0] for r in rows]

    def db_counters(self) -> dict[str, tuple[int, int]]:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = self.conn.execute(
            "SELECT datname, sessions, xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = ANY(%s)",
            (self.dbs,),
        ).fetchall()
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def snapshot(self) -> dict[str, Any]:
        backends = {pid: proc_cpu(pid) or 0.0 for pid in self.backends()}
        return {
            "t": time.perf_counter(),
            "machine": machine_busy(),
            "workers": [proc_cpu(p) or 0.0 for p in self.worker_pids],
            "children": os.times().children_user + os.times().children_system,
            "self": time.process_time(),
            "backends": backends,
            "db": self.db_counters(),
        }

    def delta(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        pg = sum(cpu - a["backends"].get(pid, 0.0) for pid, cpu in b["backends"].items())
        out = {
            "wall": b["t"] - a["t"],
            "machine": b["machine"] - a["machine"],
            "workers": sum(b["workers"]) - sum(a["workers"]),
            "per_worker": [y - x for x, y in zip(a["workers"], b["workers"], strict=True)],
            "pg": pg,
            "loadgen": b["self"] - a["self"],
            "profiler": b["children"] - a["children"],
            "churned": len(set(a["backends"]) - set(b["backends"])),
        }
        out["other"] = out["machine"] - sum(
            out[k] for k in ("workers", "pg", "loadgen", "profiler")
        )
        for db in self.dbs:
            s0, x0 = a["db"].get(db, (0, 0))
            s1, x1 = b["db"].get(db, (0, 0))
            out[f"sessions:{db}"] = s1 - s0
            out[f"xacts:{db}"] = x1 - x0
        return out

    def close(self) -> None:
        self.conn.close()


class ConnectionSampler:
    """Peak server connections (all databases, and ours) sampled every 250 ms."""

    def __init__(self, monitor_url: str, dbs: tuple[str, ...]) -> None:
        self.url = libpq_url(monitor_url)
        self.dbs = list(dbs)
        self.peak_total = self.peak_ours = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.peak_total = self.peak_ours = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                total, ours = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE datname = ANY(%s))"
                    " FROM pg_stat_activity WHERE backend_type = 'client backend'",
                    (self.dbs,),
                ).fetchone()  # type: ignore[misc]
                self.peak_total = max(self.peak_total, total)
                self.peak_ours = max(self.peak_ours, ours)
                self._stop.wait(0.25)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return self.peak_total, self.peak_ours


# -- the server -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str], port: int, workers: int, log: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "uvicorn"),
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
                # Longer than the agents' idle gaps at 10 cycles/s (6.4 s), as behind a load
                # balancer: uvicorn's default of 5 s races the client's reuse of the connection.
                "--timeout-keep-alive",
                str(KEEP_ALIVE_SECONDS),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop it, its workers and only it
        )

    def wait_ready(self, workers: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"uvicorn exited with status {self.proc.returncode}")
            try:
                ok = httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and len(self.workers()) >= workers:
                time.sleep(1.0)  # let the second worker finish its start-up too
                return
            time.sleep(0.2)
        raise SystemExit("the server did not become ready")

    def workers(self) -> list[int]:
        """The worker processes (not multiprocessing's resource tracker)."""
        found = []
        for pid in proc_children(self.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                found.append(pid)
        return found

    def connections_per_worker(self) -> list[int]:
        """Established client connections each worker holds on the listening port."""
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == self.port:
                        inodes.add(parts[9])
        counts = []
        for pid in self.workers():
            n = 0
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        n += target.startswith("socket:[") and target[8:-1] in inodes
            counts.append(n)
        return counts

    def log_summary(self) -> list[str]:
        """Counts of the server's log lines by level, and the first line of each kind."""
        levels: Counter[str] = Counter()
        first: dict[str, str] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            m = re.search(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b\s+(\S+)\s+(\S+)", line)
            if not m:
                continue
            levels[m.group(1)] += 1
            first.setdefault(f"{m.group(1)} {m.group(2)} {m.group(3)}", line[:200])
        if not levels:
            return ["  server log: no warnings or errors"]
        out = ["  server log: " + ", ".join(f"{k} {v}" for k, v in levels.most_common())]
        out += [f"    e.g. {line}" for line in list(first.values())[:6]]
        return out

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._log_file.close()


def server_env(
    store_url: str, replica_url: str, pool_size: int, max_overflow: int, prom_dir: str
) -> dict[str, str]:
    from app.cli import MALLOC_ARENAS
    from app.config import Settings

    ours = {name.upper() for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    env.update(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        CRON_SECRET=CRON_SECRET,
        SUPPRESSION_KEY=SUPPRESSION_KEY,
        APP_ENV="test",
        SCHEDULER_ENABLED="false",
        LOG_LEVEL="WARNING",
        DB_POOL_SIZE=str(pool_size),
        DB_MAX_OVERFLOW=str(max_overflow),
        PROMETHEUS_MULTIPROC_DIR=prom_dir,
        # The benchmark runs at any hour: the calling window is always open.
        CALLING_HOURS="always",
        # As `callqueue serve` and the Docker image run the workers.
        MALLOC_ARENA_MAX=MALLOC_ARENAS,
    )
    return env


def start_server(
    store_url: str,
    replica_url: str,
    prom_dir: str,
    *,
    workers: int = 2,
    pool_size: int = 10,
    max_overflow: int = 0,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """Start uvicorn as ``main`` does (``extra_env`` overrides settings) and wait until ready."""
    env = server_env(store_url, replica_url, pool_size, max_overflow, prom_dir)
    env.update(extra_env or {})
    server = Server(env, free_port(), workers, Path(prom_dir) / "uvicorn.log")
    try:
        server.wait_ready(workers)
    except BaseException:
        server.stop()
        raise
    return server


def table_stats(
    conn: psycopg.Connection[Any], tables: tuple[str, ...]
) -> dict[str, tuple[int, int]]:
    """(n_live_tup, n_dead_tup) per table from pg_stat_user_tables (as of the last stats flush),
    read on an autocommit connection to the database (kept open: the server may be full)."""
    conn.execute("SELECT pg_stat_clear_snapshot()")
    rows = conn.execute(
        "SELECT relname, n_live_tup, n_dead_tup FROM pg_stat_user_tables WHERE relname = ANY(%s)",
        (list(tables),),
    ).fetchall()
    found = {r[0]: (int(r[1]), int(r[2])) for r in rows}
    return {t: found.get(t, (0, 0)) for t in tables}


# -- the agents -------------------------------------------------------------------------------


@dataclass
class Handout:
    user_id: int
    assignment_id: str
    agent: int
    received: float
    released: float = float("inf")  # when the agent sent complete (inner bound of the hold)
    resumed: bool = False
    source: str = "queue"


@dataclass
class ModeResult:
    name: str
    seconds: float
    cycles: int = 0
    next_ms: list[float] = field(default_factory=list)
    complete_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # first error body per status
    late: int = 0
    dropped: int = 0
    empty: int = 0
    cpu: dict[str, Any] = field(default_factory=dict)
    server: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric: (sum, count)
    peak_connections: tuple[int, int] = (0, 0)
    # Callbacks (--callbacks): the share of completions that book one, how many asked to, how
    # many the service booked, and how many next-user answers served one.
    callback_share: float = 0.0
    callbacks_asked: int = 0
    callbacks_booked: int = 0
    callback_handouts: int = 0

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    def non_2xx(self) -> str:
        bad = {k: v for k, v in self.statuses.items() if not k.split()[-1].startswith("2")}
        bad.update({f"transport {k}": v for k, v in self.errors.items()})
        return ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())) or "none"


NEXT_ROUTE = "/api/queues/{queue_type}/next-user"
COMPLETE_ROUTE = "/api/assignments/{assignment_id}/complete"


def scrape(base_url: str) -> dict[str, tuple[float, float]]:
    """Sums and counts of the server's own timings (all workers, PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        ("callqueue_http_request_duration_seconds", NEXT_ROUTE): "next-user route",
        ("callqueue_http_request_duration_seconds", COMPLETE_ROUTE): "complete route",
        ("callqueue_next_user_seconds", None): "ClaimService.next_user",
    }
    found: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    body = httpx.get(f"{base_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if not sample.name.endswith(("_sum", "_count")):
                continue
            base = sample.name.rsplit("_", 1)[0]
            key = wanted.get((base, sample.labels.get("route")))
            if key is None:
                continue
            found[key][0 if sample.name.endswith("_sum") else 1] += sample.value
    return {k: (v[0], v[1]) for k, v in found.items()}


def server_delta(
    a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    return {k: (b[k][0] - a.get(k, (0, 0))[0], b[k][1] - a.get(k, (0, 0))[1]) for k in b}


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class LoadGenerator:
    """64 dashboards over real HTTP, on aiohttp: its C-accelerated HTTP parser costs a third of
    httpx's CPU per request, and the load generator shares the two CPUs with the service."""

    def __init__(self, base_url: str, tokens: list[str], callback_delay: float = 5.0) -> None:
        self.base_url = base_url
        self.tokens = tokens
        self.clients: list[aiohttp.ClientSession] = []
        self.agents = len(tokens)
        self.handouts: list[Handout] = []
        self.next_path = f"/api/queues/{QUEUE}/next-user"
        # How far ahead a booked callback falls due, and when the last one booked does.
        self.callback_delay = callback_delay
        self.last_callback_due = 0.0

    def _open(self) -> None:
        # One session with one keep-alive connection per agent, as 64 dashboards would have.
        # Sessions belong to the running event loop, so they are opened on first use.
        if not self.clients:
            self.clients = [
                aiohttp.ClientSession(
                    base_url=self.base_url,
                    timeout=aiohttp.ClientTimeout(total=60.0),
                    connector=aiohttp.TCPConnector(limit=1),
                    headers={"Authorization": f"Bearer {t}"},
                )
                for t in self.tokens
            ]

    def _outcome(self, result: ModeResult) -> dict[str, str]:
        """The completion's body: ``no_answer``, or for ``result.callback_share`` of the
        hand-outs (spread evenly: the n-th of the mode books one when floor(n x share) steps
        up) ``call_back`` with a ``callback_at`` ``callback_delay`` seconds ahead."""
        handed_out = result.statuses["next-user 200"]
        if int(handed_out * result.callback_share) <= result.callbacks_asked:
            return {"outcome": "no_answer"}
        result.callbacks_asked += 1
        due = datetime.now(UTC) + timedelta(seconds=self.callback_delay)
        self.last_callback_due = max(self.last_callback_due, time.time() + self.callback_delay)
        return {"outcome": "call_back", "callback_at": due.isoformat()}

    async def cycle(
        self, agent: int, result: ModeResult, deadline: float | None = None
    ) -> str | None:
        """One next-user then complete; the source of the hand-out (None: nobody handed out)."""
        client = self.clients[agent]
        t0 = time.perf_counter()
        try:
            async with client.post(self.next_path) as r:
                status, raw = r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.errors[f"next-user {type(exc).__name__}"] += 1
            return None
        t1 = time.perf_counter()
        result.next_ms.append((t1 - t0) * 1000)
        result.statuses[f"next-user {status}"] += 1
        if status == 204:
            result.empty += 1
            return None
        if status != 200:
            result.samples.setdefault(f"next-user {status}", raw[:300].decode(errors="replace"))
            return None
        body = json.loads(raw)
        handout = Handout(body["user_id"], body["assignment_id"], agent, t1)
        handout.resumed = bool(body["resumed"])
        handout.source = str(body["source"])
        if handout.source == "callback":
            result.callback_handouts += 1
        self.handouts.append(handout)
        outcome = self._outcome(result)
        handout.released = t2 = time.perf_counter()
        try:
            async with client.post(
                f"/api/assignments/{body['assignment_id']}/complete", json=outcome
            ) as r2:
                status, raw = r2.status, await r2.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            handout.released = float("inf")
            result.errors[f"complete {type(exc).__name__}"] += 1
            return handout.source
        t3 = time.perf_counter()
        result.statuses[f"complete {status}"] += 1
        if status != 200:
            handout.released = float("inf")
            result.samples.setdefault(f"complete {status}", raw[:300].decode(errors="replace"))
            return handout.source
        result.complete_ms.append((t3 - t2) * 1000)
        if "callback_at" in outcome:
            if json.loads(raw)["callback"] is not None:
                result.callbacks_booked += 1
            else:
                result.samples.setdefault("complete 200 without a callback", raw[:300].decode())
        if deadline is None or t3 <= deadline:
            result.cycles += 1
        return handout.source

    async def warm_up(self) -> None:
        self._open()
        result = ModeResult("warm-up", 0)
        await asyncio.gather(*(self.cycle(a, result) for a in range(self.agents)))
        if result.cycles != self.agents:
            raise SystemExit(f"warm-up failed: {dict(result.statuses)} {dict(result.errors)}")

    async def fixed_rate(
        self, rate: float, seconds: float, name: str = "", callback_share: float = 0.0
    ) -> ModeResult:
        """Open loop: cycle k starts at t0 + k / rate on agent k mod 64 (late if it is busy)."""
        result = ModeResult(name or f"{rate:g} cycles/s", seconds, callback_share=callback_share)
        n, agents = int(rate * seconds), self.agents
        t0 = time.perf_counter() + 0.05
        plan: list[list[float]] = [[] for _ in range(agents)]
        for k in range(n):
            plan[k % agents].append(t0 + k / rate)

        cutoff = t0 + seconds * 1.25  # a saturated server must not stretch the run for ever

        async def agent_loop(agent: int) -> None:
            for start in plan[agent]:
                delay = start - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif time.perf_counter() > cutoff:
                    result.dropped += 1
                    continue
                elif delay < -0.005:
                    result.late += 1
                await self.cycle(agent, result)

        await asyncio.gather(*(agent_loop(a) for a in range(agents)))
        result.seconds = time.perf_counter() - t0
        return result

    async def flat_out(
        self,
        seconds: float,
        during: Callable[[], Any] | None = None,
        name: str = "flat out",
        callback_share: float = 0.0,
    ) -> ModeResult:
        """Closed loop: every agent cycles back to back; cycles finished in the window count."""
        result = ModeResult(name, seconds, callback_share=callback_share)
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def agent_loop(agent: int) -> None:
            while time.perf_counter() < deadline:
                await self.cycle(agent, result, deadline)

        tasks = [asyncio.create_task(agent_loop(a)) for a in range(self.agents)]
        if during is not None:
            await asyncio.to_thread(during)
        await asyncio.gather(*tasks)
        return result

    async def drain_callbacks(self, max_cycles: int = 20) -> ModeResult:
        """Serve the callbacks booked so far, so none is left for the next mode: wait until the
        last one is due, then every agent cycles (booking none) until next-user hands it
        something other than a callback (each agent's own come first). Not counted."""
        result = ModeResult("callback drain", 0)
        await asyncio.sleep(max(0.0, self.last_callback_due - time.time()) + 0.2)

        async def agent_loop(agent: int) -> None:
            for _ in range(max_cycles):
                if await self.cycle(agent, result) != "callback":
                    return

        t0 = time.perf_counter()
        await asyncio.gather(*(agent_loop(a) for a in range(self.agents)))
        result.seconds = time.perf_counter() - t0
        return result

    async def bare_http(self, seconds: float, agents: int | None = None) -> ModeResult:
        """The HTTP floor: GET /healthz (an async route, no I/O) back to back from every agent."""
        agents = agents or self.agents
        result = ModeResult("GET /healthz" if agents > 1 else "healthz alone", seconds)
        deadline = time.perf_counter() + seconds

        async def agent_loop(agent: int) -> None:
            client = self.clients[agent]
            while True:
                t0 = time.perf_counter()
                async with client.get("/healthz") as r:
                    status = r.status
                    await r.read()
                t1 = time.perf_counter()
                if t1 > deadline:
                    return
                result.next_ms.append((t1 - t0) * 1000)
                result.statuses[f"healthz {status}"] += 1
                result.cycles += 1

        await asyncio.gather(*(agent_loop(a) for a in range(agents)))
        return result

    async def sequential(self, cycles: int) -> ModeResult:
        result = ModeResult("one agent alone", 0)
        t0 = time.perf_counter()
        for _ in range(cycles):
            await self.cycle(0, result)
        result.seconds = time.perf_counter() - t0
        return result

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients))


def stop_load(
    runner: asyncio.Runner, gen: LoadGenerator, server: Server
) -> tuple[list[Handout], list[str]]:
    """Close the agents' connections and stop the server: the hand-outs the agents saw, for the
    duplicate checks, and the summary of the server's log."""
    runner.run(gen.close())
    handouts = list(gen.handouts)
    server.stop()
    return handouts, server.log_summary()


def drop_databases(server_url: str, dbs: tuple[str, ...]) -> None:
    admin(server_url, [f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)' for db in dbs])


def duplicates(handouts: list[Handout]) -> dict[str, int]:
    by_user: dict[int, list[Handout]] = defaultdict(list)
    by_assignment: Counter[str] = Counter()
    for ho in handouts:
        by_user[ho.user_id].append(ho)
        by_assignment[ho.assignment_id] += 1
    overlapping = 0
    for hos in by_user.values():
        for i, a in enumerate(hos):
            for b in hos[i + 1 :]:
                if a.agent != b.agent and a.received < b.released and b.received < a.released:
                    overlapping += 1
    return {
        "handouts": len(handouts),
        "users_held_by_two_agents_at_once": overlapping,
        "users_handed_out_more_than_once": sum(1 for hos in by_user.values() if len(hos) > 1),
        "assignment_ids_handed_out_twice": sum(1 for n in by_assignment.values() if n > 1),
        "resumed_responses": sum(1 for ho in handouts if ho.resumed),
    }


def ledger_check(store_url: str) -> dict[str, int]:
    """The ledger's duplicates in this run's rows (not the seeded history): a user handed out
    twice from the queue (a callback hands its user out again by design: those rows are counted
    apart), a callback handed out twice."""
    with psycopg.connect(libpq_url(store_url), autocommit=True) as conn:
        row = conn.execute(
            f"""WITH run AS (SELECT * FROM assignments WHERE {THIS_RUN})
               SELECT (SELECT count(*) FROM run),
                      (SELECT count(*) FROM (SELECT user_id FROM run
                                              WHERE source <> 'callback'
                                              GROUP BY user_id HAVING count(*) > 1) d),
                      (SELECT count(*) FROM run WHERE status = 'active'),
                      (SELECT count(*) FROM {TABLE} WHERE status = 'invalid'),
                      (SELECT count(*) FROM {TABLE} WHERE status = 'pending'),
                      (SELECT count(*) FROM run WHERE source = 'callback'),
                      (SELECT count(*) FROM (SELECT callback_id FROM run
                                              WHERE callback_id IS NOT NULL
                                              GROUP BY callback_id HAVING count(*) > 1) c),
                      (SELECT count(*) FROM callbacks
                        WHERE status IN ('scheduled', 'assigned'))"""
        ).fetchone()
    assert row is not None
    keys = (
        "ledger_rows",
        "users_in_two_ledger_rows",
        "still_active",
        "invalid",
        "pending",
        "callback_rows",
        "callbacks_handed_out_twice",
        "open_callbacks",
    )
    return dict(zip(keys, (int(v) for v in row), strict=True))


def open_callbacks(store_url: str) -> int:
    with psycopg.connect(libpq_url(store_url), autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM callbacks WHERE status IN ('scheduled', 'assigned')"
        ).fetchone()
    assert row is not None
    return int(row[0])


# -- py-spy -----------------------------------------------------------------------------------

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Innermost app frame decides the step; the route (next_user / complete) decides the side.
STEP_MARKERS: list[tuple[str, str, str]] = [
    ("app/replica/reader.py", "", "replica reads"),
    ("app/replica/classification.py", "", "replica reads"),
    ("app/queues/claims.py", "_invalidate", "claim: mark a failed source"),
    ("app/queues/claims.py", "_attempt", "claim attempt (cq_claim, cq_hand_out, commit)"),
    ("app/queues/claims.py", "_resume", "resume"),
    ("app/queues/claims.py", "_pending_left", "pending-left check"),
    ("app/queues/claims.py", "next_user", "claim metrics"),
    ("app/queues/leases.py", "", "lease sweep"),
    ("app/queues/assignments.py", "complete", "complete: cq_complete (head when not held)"),
    ("app/queues/views.py", "", "assignment view"),
    ("app/flags.py", "", "flags read"),
    ("app/services.py", "flags", "flags read"),
    ("app/agents.py", "", "auth"),
    ("app/api/deps.py", "current_agent", "auth"),
    ("app/main.py", "observe", "middleware (request id, metrics)"),
]
LAYERS = [
    ("psycopg", "psycopg (driver)"),
    ("sqlalchemy", "SQLAlchemy"),
    ("prometheus_client", "prometheus_client"),
    ("pydantic", "pydantic"),
    ("fastapi", "FastAPI"),
    ("starlette", "Starlette"),
    ("uvicorn", "uvicorn"),
    ("httptools", "uvicorn"),
    ("anyio", "anyio threadpool"),
    ("concurrent/futures", "threadpool"),
    ("threading.py", "threadpool"),
    ("asyncio", "asyncio"),
    ("/logging/", "logging"),
    ("json/", "json"),
    ("/app/", "app code"),
]


def parse_frame(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def short(func: str, file: str) -> str:
    path = file
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{func} ({path})"


def classify_stack(frames: list[tuple[str, str]]) -> str:
    route = ""
    for func, file in frames:
        if file.endswith("app/api/agents.py") and func in ("next_user", "complete"):
            route = "next-user" if func == "next_user" else "complete"
    for func, file in reversed(frames):
        for suffix, name, label in STEP_MARKERS:
            if file.endswith(suffix) and (not name or func == name):
                if label.startswith("complete:") or not route:
                    return label
                return f"{route}: {label}"
    for func, file in reversed(frames):
        if file.endswith("app/api/agents.py"):
            return f"{route or 'route'}: route body"
        if "fastapi/routing.py" in file and func == "serialize_response":
            return "response model validation + JSON"
        if "fastapi/dependencies" in file or "fastapi/routing.py" in file:
            return "FastAPI request handling (deps, body, response)"
    return "HTTP server, ASGI, event loop, threadpool"


def layer_of(file: str) -> str:
    for marker, name in LAYERS:
        if marker in file:
            return name
    return "other"


# Mechanisms worth naming: label, substrings all required in the stack, substrings excluded.
HOT_SPOTS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("threadpool dispatch on the event loop (run_in_threadpool)", ("run_in_threadpool",), ()),
    (
        "  of which for sync dependencies (get_services, current_agent, queue_type_path)",
        ("run_in_threadpool", "solve_dependencies ("),
        (),
    ),
    (
        "  of which for the response-model validation hop (serialize_response)",
        ("run_in_threadpool", "serialize_response ("),
        (),
    ),
    (
        "BaseHTTPMiddleware (app/main.py observe) outside the routed app",
        ("starlette/middleware/base.py",),
        ("starlette/routing.py",),
    ),
    ("FastAPI native telemetry check per request", ("NativeTelemetry.enabled",), ()),
    ("pool pre-ping on checkout (do_ping)", ("do_ping (",), ()),
    ("SQLAlchemy cache-key generation (Core select() per call)", ("_generate_cache_key",), ()),
    ("prometheus_client (metrics)", ("prometheus_client/",), ()),
]


def summarise_pyspy(path: Path, top: int = 18) -> list[str]:
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        parts = stack.split(";")
        frames = [parse_frame(p) for p in parts]
        frames = [f for f in frames if f[1]]  # drop process/thread headers
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        own[short(*leaf)] += n
        layers[layer_of(leaf[1])] += n
        for key in {short(func, file) for func, file in frames}:
            cumulative[key] += n
        steps[classify_stack(frames)] += n
        for label, needles, excluded in HOT_SPOTS:
            if all(needle in stack for needle in needles) and not any(x in stack for x in excluded):
                hot[label] += n
    if not total:
        return ["  py-spy recorded no samples"]
    out = [f"  {total:,} samples of GIL-holding Python threads in both workers"]
    out.append("\n  by step of the cycle (innermost app frame; % of worker CPU samples)")
    for name, n in steps.most_common():
        out.append(f"    {100 * n / total:5.1f}%  {name}")
    out.append("\n  named mechanisms (cumulative: samples with the frame anywhere in the stack)")
    for label, _, _ in HOT_SPOTS:
        out.append(f"    {100 * hot[label] / total:5.1f}%  {label}")
    out.append("\n  by layer of the leaf frame")
    for name, n in layers.most_common():
        out.append(f"    {100 * n / total:5.1f}%  {name}")
    out.append(f"\n  top {top} frames by own time")
    for name, n in own.most_common(top):
        out.append(f"    {100 * n / total:5.1f}%  {name}")
    out.append(f"\n  top {top} frames by cumulative time (excluding the event loop's outer frames)")
    shown = 0
    for name, n in cumulative.most_common():
        if n / total > 0.97:
            continue
        out.append(f"    {100 * n / total:5.1f}%  {name}")
        shown += 1
        if shown >= top:
            break
    return out


def run_pyspy(server_pid: int, seconds: float, out: Path, started: list[int]) -> str | None:
    exe = VENV_BIN / "py-spy"
    if not exe.exists():
        return "py-spy is not installed in the venv (.venv/bin/pip install py-spy)"
    cmd = [
        str(exe),
        "record",
        "--pid",
        str(server_pid),
        "--subprocesses",
        "--gil",
        "--nonblocking",
        "--rate",
        "200",
        "--duration",
        str(max(1, round(seconds))),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started.append(proc.pid)
    _, err = proc.communicate()
    started.remove(proc.pid)
    if proc.returncode != 0 or not out.exists():
        return f"py-spy failed ({proc.returncode}): {err.strip()[-300:]}"
    return None


# -- in-process step breakdown ----------------------------------------------------------------


class StepProbe:
    """Wall time per step (wrapped functions), and statements, checkouts, commits per step."""

    def __init__(self) -> None:
        self.stack: list[str] = ["(outside)"]
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.stmts: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        self.checkouts: Counter[tuple[str, str]] = Counter()
        self.ends: Counter[tuple[str, str]] = Counter()
        self.restore: list[tuple[Any, str, Any]] = []
        self._t0: dict[int, float] = {}
        self.engines: dict[Any, str] = {}

    @contextlib.contextmanager
    def section(self, label: str) -> Iterator[None]:
        self.stack.append(label)
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.wall[label] += time.perf_counter() - t0
            self.cpu[label] += time.thread_time() - c0
            self.stack.pop()

    def wrap(self, owner: Any, name: str, label: str) -> None:
        import inspect

        raw = inspect.getattr_static(owner, name)
        is_static = isinstance(raw, staticmethod)
        original = getattr(owner, name)
        probe = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with probe.section(label):
                return original(*args, **kwargs)

        setattr(owner, name, staticmethod(wrapper) if is_static else wrapper)
        self.restore.append((owner, name, raw))

    def unwrap(self) -> None:
        for owner, name, raw in reversed(self.restore):
            setattr(owner, name, raw)
        self.restore.clear()

    def listen(self, engine: Engine, db: str) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
            self._t0[id(cursor)] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
            entry = self.stmts[(self.stack[-1], db)]
            entry[0] += 1
            entry[1] += time.perf_counter() - self._t0.pop(id(cursor), time.perf_counter())

        self.engines[engine.pool] = db  # an engine's execution_options() copies share its pool

        @event.listens_for(engine.pool, "checkout")
        def checkout(*args: Any) -> None:
            self.checkouts[(self.stack[-1], db)] += 1

        @event.listens_for(engine, "commit")
        def commit(*args: Any) -> None:
            self.ends[(self.stack[-1], db)] += 1

        @event.listens_for(engine, "rollback")
        def rollback(*args: Any) -> None:
            self.ends[(self.stack[-1], db)] += 1


def in_process_breakdown(
    store_url: str, replica_url: str, token: str, cycles: int
) -> tuple[float, list[str]]:
    """The HTTP routes' bodies replayed in this process, one agent, with every step timed."""
    import app.api.agents as api_agents
    from app.agents import authenticate
    from app.config import load_settings
    from app.queues.assignments import AssignmentService
    from app.queues.claims import ClaimService
    from app.queues.kinds import QueueType
    from app.queues.outcomes import Outcome
    from app.replica.reader import Replica
    from app.rules.calling import CallingWindow
    from app.services import Services

    settings = load_settings(
        database_url=store_url,
        replica_database_url=replica_url,
        app_env="test",
        log_level="WARNING",
        calling_hours="always",
        suppression_key=SUPPRESSION_KEY,
    )
    services = Services.build(settings)
    probe = StepProbe()
    probe.listen(services.engine, "store")
    probe.listen(services.replica.engine, "replica")
    wraps = [
        (ClaimService, "next_user", "N claim: next_user total"),
        (ClaimService, "_attempt", "N claim attempt"),
        (Replica, "fetch_claim_facts", "N claim attempt: replica facts + contact"),
        (AssignmentService, "complete", "C complete total"),
        (AssignmentService, "_verdict", "C replica classify"),
    ]
    queue = QueueType(QUEUE)
    try:
        # Warm the pools and the prepared-statement caches before timing.
        for _ in range(20):
            with services.autocommit.connect() as conn:
                found = authenticate(conn, token)
            claimed = services.claims.next_user(
                found.agent, queue, services.flags_for(found.flag_overrides)
            )
            assert claimed is not None
            services.assignments.complete(
                found.agent, claimed.assignment.id, Outcome.NO_ANSWER, None, None
            )
        with services.engine.connect() as conn:
            ping = []
            for _ in range(200):
                t0 = time.perf_counter()
                conn.execute(text("SELECT 1"))
                ping.append((time.perf_counter() - t0) * 1000)
        for owner, name, label in wraps:
            # The steps are the service's private methods: one that was merged or renamed is
            # left out of the breakdown rather than failing the benchmark.
            if hasattr(owner, name):
                probe.wrap(owner, name, label)
        probe.stmts.clear()
        probe.checkouts.clear()
        probe.ends.clear()
        t_start, c_start = time.perf_counter(), time.thread_time()
        for _ in range(cycles):
            with probe.section("N next-user total"):
                conn = services.autocommit.connect()
                with probe.section("N auth + flags"):
                    found = authenticate(conn, token)
                    flags = services.flags_for(found.flag_overrides)
                window = CallingWindow(services.calling_rules_for(found.calling_rules), found.now)
                claimed = services.claims.next_user(found.agent, queue, flags, conn, window)
                conn.close()
                assert claimed is not None
                with probe.section("N assignment view + JSON"):
                    json.dumps(
                        api_agents.assignment_view(
                            claimed.assignment, claimed.contact, resumed=claimed.resumed
                        )
                    )
            with probe.section("C complete route total"):
                conn = services.autocommit.connect()
                with probe.section("C auth"):
                    found = authenticate(conn, token, holding=True)
                done = services.assignments.complete(
                    found.agent,
                    claimed.assignment.id,
                    Outcome.NO_ANSWER,
                    None,
                    None,
                    conn,
                    window,
                    found.holding,
                )
                conn.close()
                with probe.section("C assignment view + JSON"):
                    json.dumps(
                        {
                            **api_agents.assignment_view(done.assignment, None),
                            "score": api_agents.score_view(done.score),
                        }
                    )
        elapsed = time.perf_counter() - t_start
        cpu_elapsed = time.thread_time() - c_start
    finally:
        probe.unwrap()
        services.dispose()

    def ms(label: str) -> float:
        return 1000 * probe.wall.get(label, 0.0) / cycles

    def cpu_ms(label: str) -> float:
        return 1000 * probe.cpu.get(label, 0.0) / cycles

    def counts(label: str, db: str) -> tuple[float, float, float, float]:
        n, secs = probe.stmts.get((label, db), [0, 0.0])
        return (
            n / cycles,
            1000 * secs / cycles,
            probe.checkouts.get((label, db), 0) / cycles,
            probe.ends.get((label, db), 0) / cycles,
        )

    # Exclusive wall per label = inclusive minus the wrapped labels nested inside it.
    nested = {
        "N next-user total": [
            "N auth + flags",
            "N claim: next_user total",
            "N assignment view + JSON",
        ],
        "N claim: next_user total": ["N claim attempt"],
        "N claim attempt": ["N claim attempt: replica facts + contact"],
        "C complete route total": ["C auth", "C complete total", "C assignment view + JSON"],
        "C complete total": ["C replica classify"],
    }
    rows: list[tuple[str, str]] = [
        ("N next-user total", "next-user route body (no HTTP)"),
        ("N auth + flags", "  authenticate: agent and flags (one statement)"),
        ("N claim: next_user total", "  ClaimService.next_user (one checkout)"),
        ("N claim attempt", "    attempt: cq_claim, replica, cq_hand_out, commit"),
        ("N claim attempt: replica facts + contact", "      replica read (one statement)"),
        ("N assignment view + JSON", "  assignment view + JSON"),
        ("C complete route total", "complete route body (no HTTP)"),
        ("C auth", "  authenticate, with the held assignment's head (one statement)"),
        ("C complete total", "  AssignmentService.complete: replica, cq_complete"),
        ("C replica classify", "    replica classify (one statement)"),
        ("C assignment view + JSON", "  assignment view + JSON"),
    ]
    out = [
        f"  {cycles} cycles, one agent, sequential, in this process: {1000 * elapsed / cycles:.2f}"
        f" ms per cycle ({1000 * cpu_elapsed / cycles:.2f} ms of it CPU in this process),"
        f" {1000 * (elapsed - cpu_elapsed) / cycles:.2f} ms waiting (databases, other processes);"
        f" a bare SELECT 1 round trip on the store: median"
        f" {statistics.median(ping):.3f} ms",
        "  ms: inclusive wall time per cycle; own: outside the nested rows (checkouts, BEGIN,"
        " COMMIT, Python); CPU ms: this process's CPU (Python, SQLAlchemy, psycopg), inclusive;"
        " statements (st), their ms, checkouts and commits are inclusive",
        f"  {'step':<56}{'ms':>7}{'own ms':>8}{'CPU ms':>8}{'store st':>9}{'st ms':>7}"
        f"{'replica st':>11}{'st ms':>7}{'checkouts':>10}{'commits':>8}",
    ]

    def subtree(label: str) -> list[str]:
        return [label, *(d for child in nested.get(label, []) for d in subtree(child))]

    def inclusive(label: str, db: str) -> tuple[float, ...]:
        parts = [counts(lab, db) for lab in subtree(label)]
        return tuple(sum(values) for values in zip(*parts, strict=True))

    for label, title in rows:
        own = ms(label) - sum(ms(child) for child in nested.get(label, []))
        s_n, s_ms, s_co, s_end = inclusive(label, "store")
        r_n, r_ms, r_co, _ = inclusive(label, "replica")
        out.append(
            f"  {title:<56}{ms(label):>7.2f}{own:>8.2f}{cpu_ms(label):>8.2f}{s_n:>9.1f}"
            f"{s_ms:>7.2f}{r_n:>11.1f}"
            f"{r_ms:>7.2f}{s_co + r_co:>10.1f}{s_end:>8.1f}"
        )
    total_stmts = sum(v[0] for (lab, db), v in probe.stmts.items() if db == "store") / cycles
    total_rep = sum(v[0] for (lab, db), v in probe.stmts.items() if db == "replica") / cycles
    total_co = sum(probe.checkouts.values()) / cycles
    total_end = sum(n for (lab, db), n in probe.ends.items() if db == "store") / cycles
    out.append(
        f"  per cycle: {total_stmts:.1f} store statements, {total_rep:.1f} replica statements,"
        f" {total_co:.1f} pool checkouts (store and replica), {total_end:.1f} store"
        f" COMMIT/ROLLBACKs (each a round trip, plus a BEGIN before the first statement)"
    )
    return 1000 * elapsed / cycles, out


# -- raw-SQL baseline -------------------------------------------------------------------------


def baseline(
    store_url: str, connections: int, seconds: float, snapshot: Callable[[], Any]
) -> dict[str, Any]:
    """Bare claim + complete from ``connections`` threads; ``snapshot`` is taken with every
    connection open, right before and right after the timed window."""
    url = libpq_url(store_url)
    counts = [0] * connections
    errors: Counter[str] = Counter()
    stop = threading.Event()
    ready = threading.Barrier(connections + 1)
    loop_done = threading.Barrier(connections + 1)
    release = threading.Event()
    ran_dry: list[float] = []

    def worker(i: int) -> None:
        try:
            conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            errors[type(exc).__name__] += 1
            ready.abort()
            return
        with conn:
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                return
            try:
                while not stop.is_set():
                    try:
                        row = conn.execute(BASELINE_CLAIM, {"a": i + 1}).fetchone()
                        if row is None:
                            ran_dry.append(time.perf_counter())
                            stop.set()
                            break
                        conn.execute(BASELINE_DONE, {"id": row[0]})
                    except psycopg.Error as exc:
                        errors[type(exc).__name__] += 1
                        continue
                    if not stop.is_set():
                        counts[i] += 1
            finally:
                with contextlib.suppress(threading.BrokenBarrierError):
                    loop_done.wait(60)
                release.wait(60)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        stop.set()
        for t in threads:
            t.join()
        return {"error": f"could not open {connections} connections: {dict(errors)}"}
    before = snapshot()
    t0 = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    t1 = min([time.perf_counter(), *ran_dry])
    with contextlib.suppress(threading.BrokenBarrierError):
        loop_done.wait(60)
    after = snapshot()
    release.set()
    for t in threads:
        t.join()
    total = sum(counts)
    return {
        "cycles": total,
        "seconds": t1 - t0,
        "rate": total / (t1 - t0),
        "errors": dict(errors),
        "ran_dry": bool(ran_dry),
        "before": before,
        "after": after,
    }


# -- report -----------------------------------------------------------------------------------


def cpu_line(cpu: dict[str, Any], cycles: int) -> str:
    if not cpu or not cycles:
        return ""
    wall = cpu["wall"]

    def part(key: str) -> str:
        return f"{key} {1000 * cpu[key] / cycles:.2f} ms ({100 * cpu[key] / (2 * wall):.0f}%)"

    keys = ["workers", "pg", "loadgen", "profiler", "other"]
    keys = [k for k in keys if k != "profiler" or cpu["profiler"] > 0]
    busy = 100 * cpu["machine"] / ((os.cpu_count() or 2) * wall)
    split = " + ".join(f"{1000 * w / cycles:.2f}" for w in cpu.get("per_worker", []))
    return (
        f"CPU per cycle: {', '.join(part(k) for k in keys)}; machine busy {busy:.0f}%"
        f" of {os.cpu_count()} CPUs" + (f"; per uvicorn process {split} ms" if split else "")
    )


def print_mode(result: ModeResult, dbs: tuple[str, str]) -> None:
    print(
        f"  {result.name}: {result.cycles:,} cycles in {result.seconds:.1f} s ="
        f" {result.rate:.1f} cycles/s; next-user p50 {pct(result.next_ms, 50):.1f}"
        f" p95 {pct(result.next_ms, 95):.1f} p99 {pct(result.next_ms, 99):.1f}"
        f" max {max(result.next_ms, default=float('nan')):.1f} ms; complete p50"
        f" {pct(result.complete_ms, 50):.1f} p99 {pct(result.complete_ms, 99):.1f} ms"
    )
    extras = [f"non-2xx: {result.non_2xx()}"]
    for status, sample in result.samples.items():
        extras.append(f"first {status} body: {sample}")
    if result.late:
        extras.append(f"late starts (agent still busy): {result.late}")
    if result.dropped:
        extras.append(f"not started (over 1.25x the duration behind schedule): {result.dropped}")
    if result.empty:
        extras.append(f"204 empty: {result.empty}")
    if result.callback_share or result.callback_handouts:
        extras.append(
            f"callbacks booked {result.callbacks_booked} (of {result.callbacks_asked} asked),"
            f" handed out {result.callback_handouts}"
        )
    print("    " + "; ".join(extras))
    server = result.server
    if server.get("next-user route", (0, 0))[1]:

        def mean(key: str) -> float:
            total, n = server.get(key, (0.0, 0.0))
            return 1000 * total / n if n else float("nan")

        nu_client = statistics.fmean(result.next_ms) if result.next_ms else float("nan")
        cp_client = statistics.fmean(result.complete_ms) if result.complete_ms else float("nan")
        nu_route, cp_route = mean("next-user route"), mean("complete route")
        print(
            f"    means (ms): next-user at the client {nu_client:.1f} = in the app's middleware"
            f" {nu_route:.1f} (ClaimService.next_user {mean('ClaimService.next_user'):.1f},"
            f" the rest: auth, flags, threadpool hops, serialisation) + outside it (uvicorn,"
            f" event loop, network, aiohttp) {nu_client - nu_route:.1f}; complete at the client"
            f" {cp_client:.1f} = middleware {cp_route:.1f} + outside {cp_client - cp_route:.1f}"
        )
    if result.cpu:
        cpu = result.cpu
        print("    " + cpu_line(cpu, result.cycles))
        store, replica = dbs
        per = max(result.cycles, 1)
        print(
            f"    transactions per cycle: store {cpu[f'xacts:{store}'] / per:.1f}, replica"
            f" {cpu[f'xacts:{replica}'] / per:.1f}; new server sessions: store"
            f" {cpu[f'sessions:{store}']}, replica {cpu[f'sessions:{replica}']}; peak connections"
            f" {result.peak_connections[1]} ours / {result.peak_connections[0]} on the server"
        )


# -- alternating runs (--callbacks, --rules) ---------------------------------------------------

TOLERANCE = 0.10  # "within 10% of the same run without" (issue 13: callbacks, issue 14: rules)
Runs = dict[bool, list[tuple[ModeResult, ModeResult]]]  # variant on? -> (paced, flat) runs


def alternating_runs(
    gen: LoadGenerator,
    measured: Callable[[Callable[[], Any]], ModeResult],
    store_url: str,
    *,
    labels: tuple[str, str],
    tables: str,
    rounds: int,
    rate: float,
    rate_seconds: float,
    flat_seconds: float,
    switch: Callable[[bool], None] | None = None,
    after: Callable[[bool, tuple[ModeResult, ModeResult]], None] | None = None,
    callback_share: float = 0.0,
) -> Runs:
    """The same workload with a variant off and on, alternating (ABBA: off, on, on, off, ...) so
    drift on the machine and in the tables falls on both. Before each run ``switch(on)`` sets the
    variant up and ``tables`` are VACUUMed; each run is ``rate`` cycles/s for ``rate_seconds``,
    then flat out for ``flat_seconds`` (with ``callback_share`` of the completions booking a
    callback when on); then ``after(on, (paced, flat))``. ``labels``: the runs' names, off, on."""
    runs: Runs = {False: [], True: []}
    for r in range(rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            label = f"{labels[on]} {r + 1}"
            share = callback_share if on else 0.0
            if switch is not None:
                switch(on)
            maintain(store_url, tables)
            paced = measured(
                functools.partial(gen.fixed_rate, rate, rate_seconds, f"{rate:g}/s {label}", share)
            )
            flat = measured(
                functools.partial(
                    gen.flat_out, flat_seconds, name=f"flat {label}", callback_share=share
                )
            )
            runs[on].append((paced, flat))
            if after is not None:
                after(on, (paced, flat))
    return runs


def print_alternating_summary(
    runs: Runs,
    base_rate: float,
    names: tuple[str, str],
    versus: str,
    extra_header: str,
    extra: Callable[[bool, list[tuple[ModeResult, ModeResult]]], str],
) -> bool:
    """Per variant (off, on): every run's figure, then pooled (p99 over all the paced runs'
    next-user latencies, flat out as the mean of the runs), the ratio to the raw baseline and the
    CPU per flat-out cycle, then on / off; whether on stays within TOLERANCE of off."""
    header = (
        f"{'mode':<18}{'p99 at pace (ms)':<24}{'cp p99':>8}  {'flat out (cycles/s)':<24}"
        f"{'ratio':>7}{'CPU ms/cycle':>14}  {extra_header}"
    )
    print(header)
    print("-" * len(header))
    pooled: dict[bool, tuple[float, float]] = {}
    cpu_ms: dict[bool, float] = {}
    for on in (False, True):
        pairs = runs[on]
        paced_ms = [v for paced, _ in pairs for v in paced.next_ms]
        complete_ms = [v for paced, _ in pairs for v in paced.complete_ms]
        p99 = pct(paced_ms, 99)
        flat_rate = statistics.fmean(flat.rate for _, flat in pairs)
        ratio = flat_rate / base_rate if base_rate == base_rate and base_rate else float("nan")
        pooled[on] = (p99, ratio)
        # Flat out, workers + PostgreSQL + load generator: what the machine's other work
        # disturbs less than the rates (the CPU-bound ceilings of the main summary).
        cpu_ms[on] = (
            1000
            * sum(f.cpu["workers"] + f.cpu["pg"] + f.cpu["loadgen"] for _, f in pairs)
            / max(sum(f.cycles for _, f in pairs), 1)
        )
        p99_runs = " ".join(f"{pct(p.next_ms, 99):.1f}" for p, _ in pairs)
        flat_runs = " ".join(f"{f.rate:.1f}" for _, f in pairs)
        print(
            f"{names[on]:<18}{f'{p99_runs} -> {p99:.1f}':<24}{pct(complete_ms, 99):>8.1f}  "
            f"{f'{flat_runs} -> {flat_rate:.1f}':<24}{ratio:>7.3f}"
            f"{cpu_ms[on]:>14.2f}  {extra(on, pairs)}"
        )
    print(f"{'raw baseline':<18}{'':<24}{'':>8}  {base_rate:<24.1f}")
    print("-" * len(header))
    (p99_off, ratio_off), (p99_on, ratio_on) = pooled[False], pooled[True]
    met = p99_on <= p99_off * (1 + TOLERANCE) and ratio_on >= ratio_off * (1 - TOLERANCE)
    print(
        f"{versus}: p99 at pace x{p99_on / p99_off:.3f}, flat-out ratio"
        f" x{ratio_on / ratio_off:.3f} (within {TOLERANCE:.0%}: {'met' if met else 'MISSED'});"
        f" CPU per flat-out cycle x{cpu_ms[True] / cpu_ms[False]:.3f}"
    )
    return met


# -- callbacks (--callbacks) -------------------------------------------------------------------


def compare_callbacks(
    runner: asyncio.Runner,
    gen: LoadGenerator,
    measured: Callable[[Callable[[], Any]], ModeResult],
    store_url: str,
    *,
    rounds: int,
    share: float,
    rate: float,
    rate_seconds: float,
    flat_seconds: float,
) -> Runs:
    """The same workload without and with callbacks, alternating; after a run with callbacks,
    the ones still open are served (not counted), so none spills into the next."""
    print(
        f"\nCallbacks: {share:.0%} of hand-outs completed with call_back, callback_at"
        f" {gen.callback_delay:g} s ahead (each served by the agent who booked it, the"
        f" service's default CALLBACK_PERSONAL_MINUTES); {rounds} rounds of {rate:g} cycles/s"
        f" for {rate_seconds:g} s then flat out for {flat_seconds:g} s, without and with,"
        " alternating"
    )

    def drain(with_callbacks: bool, _: tuple[ModeResult, ModeResult]) -> None:
        if not with_callbacks:
            return
        drained = runner.run(gen.drain_callbacks())
        print(
            f"    drain: {drained.callback_handouts} callbacks served in"
            f" {drained.seconds:.1f} s ({drained.non_2xx()} non-2xx); open callbacks"
            f" left: {open_callbacks(store_url)}"
        )

    return alternating_runs(
        gen,
        measured,
        store_url,
        labels=("plain", "+cb"),
        tables=f"{TABLE}, assignments, callbacks, user_call_scores",
        rounds=rounds,
        rate=rate,
        rate_seconds=rate_seconds,
        flat_seconds=flat_seconds,
        after=drain,
        callback_share=share,
    )


def print_callback_summary(runs: Runs, base_rate: float, share: float, delay: float) -> bool:
    """The comparison the issue asks for; False when it misses or when no callback was served
    (then it compares nothing)."""
    print(
        f"\nCALLBACKS  {share:.0%} of hand-outs book a callback due {delay:g} s later, served by"
        " later cycles; per mode: every run's figure, then pooled (p99 over all the paced runs'"
        " next-user latencies, flat out as the mean of the runs)"
    )

    def booked_and_served(_: bool, pairs: list[tuple[ModeResult, ModeResult]]) -> str:
        booked = sum(p.callbacks_booked + f.callbacks_booked for p, f in pairs)
        served = sum(p.callback_handouts + f.callback_handouts for p, f in pairs)
        handouts = sum(p.statuses["next-user 200"] + f.statuses["next-user 200"] for p, f in pairs)
        return f"{booked:,} / {served:,} ({100 * served / max(handouts, 1):.1f}%)"

    met = print_alternating_summary(
        runs,
        base_rate,
        ("without", "with callbacks"),
        "with / without",
        "callbacks booked / handed out (of hand-outs)",
        booked_and_served,
    )
    served_total = sum(p.callback_handouts + f.callback_handouts for p, f in runs[True])
    if not served_total:
        print("NO callback was handed out during the runs: the comparison measures nothing")
    return met and served_total > 0


# -- calling rules (--rules) -------------------------------------------------------------------

RULES_TIMEZONE = "Europe/London"
RULES_OFF: dict[str, Any] = {"timezone": RULES_TIMEZONE, "hours": "always", "holidays": []}
# Open at any hour the benchmark runs (SPEC 7.3 grammar: every day, 24:00 as an end), but a real
# weekly window rather than the "always" shortcut; holidays: eight fixed dates a year (this year
# and the next), minus the days the run could fall on.
RULES_ON_HOURS = "mon-sun 00:00-24:00"
BANK_HOLIDAYS = (
    "01-01",
    "04-03",
    "04-06",
    "05-04",
    "05-25",
    "08-31",
    "12-25",
    "12-28",
)
SUPPRESSED_NUMBERS = 100_000
# Valid-length GB mobile numbers 07911 100000-199999: never the bench users' (07700 900xxx).
SUPPRESSED_PREFIX = "07911 1"


def rules_on_body(today: datetime) -> dict[str, Any]:
    local = today.astimezone(ZoneInfo(RULES_TIMEZONE)).date()
    near = {local - timedelta(days=1), local, local + timedelta(days=1)}
    holidays = sorted(
        {
            date.fromisoformat(f"{year}-{md}")
            for year in (local.year, local.year + 1)
            for md in BANK_HOLIDAYS
        }
        - near
    )
    return {
        "timezone": RULES_TIMEZONE,
        "hours": RULES_ON_HOURS,
        "holidays": [d.isoformat() for d in holidays],
    }


def suppression_hashes(key: str, n: int) -> list[str]:
    """The keyed hashes (the service's own ``SuppressionList.phone_key``) of ``n`` numbers that
    no bench user has; checked against the users' numbers (07700 900000-900999)."""
    from app.rules.suppression import SuppressionList

    if n > 100_000:
        raise SystemExit("--suppressed: at most 100,000 numbers (07911 100000-199999)")
    hasher = SuppressionList(key.encode())
    hashes = [hasher.phone_key(f"{SUPPRESSED_PREFIX}{i:05d}") for i in range(n)]
    users = {hasher.phone_key(f"07700 900{i:03d}") for i in range(1000)}
    if None in hashes or users & set(hashes):
        raise SystemExit("the suppression numbers do not parse, or include a bench user's number")
    return [h for h in hashes if h is not None]


@dataclass
class RulesSwitch:
    """Turns the calling rules on and off between runs: the rules through the supervisors' API,
    the suppression list straight into the store with the server's key (TRUNCATE, then
    ``cq_suppress`` in one statement; its audit table is truncated with it)."""

    base_url: str
    supervisor_token: str
    store_url: str
    hashes: list[str]
    fingerprint: str
    invalidations: dict[bool, Counter[str]] = field(
        default_factory=lambda: {False: Counter(), True: Counter()}
    )
    _seen: Counter[str] = field(default_factory=Counter)

    def __call__(self, on: bool) -> None:
        t0 = time.perf_counter()
        body = rules_on_body(datetime.now(UTC)) if on else RULES_OFF
        r = httpx.put(
            f"{self.base_url}/api/admin/calling-rules",
            json=body,
            headers={"Authorization": f"Bearer {self.supervisor_token}"},
            timeout=30,
        )
        if r.status_code != 200 or not r.json()["open_now"]:
            raise SystemExit(f"PUT /api/admin/calling-rules: {r.status_code} {r.text[:300]}")
        with psycopg.connect(libpq_url(self.store_url)) as conn:
            conn.execute("TRUNCATE suppressed_numbers, suppression_changes")
            # The key's fingerprint, as the service records it on its first write to the list.
            stored = conn.execute(
                "INSERT INTO suppression_key_check (id, fingerprint) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET fingerprint = suppression_key_check.fingerprint"
                " RETURNING fingerprint",
                (self.fingerprint,),
            ).fetchone()
            if stored is None or stored[0] != self.fingerprint:
                raise SystemExit("suppression_key_check holds another key's fingerprint")
            if on:
                conn.execute("SELECT cq_suppress(%s::text[], 'import', NULL)", (self.hashes,))
        count = httpx.get(
            f"{self.base_url}/api/admin/suppression",
            headers={"Authorization": f"Bearer {self.supervisor_token}"},
            timeout=30,
        ).json()["count"]
        expected = len(self.hashes) if on else 0
        if count != expected:
            raise SystemExit(f"the suppression list holds {count:,}, not {expected:,}")
        if on:
            # The server hashes with the same key: one of the numbers is already on its list
            # (and its key matches the fingerprint recorded above, or this is a 409).
            r = httpx.post(
                f"{self.base_url}/api/admin/suppression",
                json={"phones": [f"{SUPPRESSED_PREFIX}00000"]},
                headers={"Authorization": f"Bearer {self.supervisor_token}"},
                timeout=30,
            )
            if r.status_code != 200 or r.json()["already_present"] != 1:
                raise SystemExit(f"the server's key hashes otherwise: {r.status_code} {r.text}")
        print(
            f"    rules {'on' if on else 'off'}: hours {body['hours']!r},"
            f" {len(body['holidays'])} holidays, {count:,} suppressed numbers"
            f" ({time.perf_counter() - t0:.1f} s)"
        )

    def _reasons(self) -> tuple[Counter[str], int]:
        """entry_invalidations by reason so far, and the queue's pending entries."""
        with psycopg.connect(libpq_url(self.store_url), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT reason, count(*) FROM entry_invalidations GROUP BY reason"
            ).fetchall()
            pending = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE status = 'pending'")
            left = int(pending.fetchone()[0])  # type: ignore[index]
        return Counter({str(reason): int(n) for reason, n in rows}), left

    def start(self) -> None:
        self._seen, left = self._reasons()
        print(f"    pending entries before the first run: {left:,}")

    def count_invalidations(self, on: bool, _: tuple[ModeResult, ModeResult]) -> None:
        """The run's entry_invalidations by reason (suppressed and attempt_cap must be 0)."""
        now, left = self._reasons()
        run = now - self._seen
        self._seen = now
        self.invalidations[on] += run
        print(
            f"    invalidations in the run: {dict(run) or 'none'}; pending entries left: {left:,}"
        )


def compare_rules(
    gen: LoadGenerator,
    measured: Callable[[Callable[[], Any]], ModeResult],
    switch: RulesSwitch,
    *,
    rounds: int,
    rate: float,
    rate_seconds: float,
    flat_seconds: float,
) -> Runs:
    """The same workload with the calling rules off and on, alternating. Off: hours "always",
    no holidays, the list empty; on: a weekly window open now, holiday dates (none near the
    run), the list of --suppressed numbers. The caps are the service's defaults in both (3 a
    day, 10 a week): the queue is never refilled while the server runs, so each user is handed
    out at most once from it (plus once per callback with --callbacks), far below them."""
    print(
        f"\nCalling rules (issue 14): off = hours 'always', no holidays, empty suppression list;"
        f" on = hours {RULES_ON_HOURS!r}, holiday dates, {len(switch.hashes):,} suppressed"
        f" numbers (none a bench user's); caps at the defaults in both; {rounds} rounds of"
        f" {rate:g} cycles/s for {rate_seconds:g} s then flat out for {flat_seconds:g} s, off"
        " and on, alternating"
    )
    switch.start()
    runs = alternating_runs(
        gen,
        measured,
        switch.store_url,
        labels=("rules off", "rules on"),
        tables=f"{TABLE}, assignments, user_call_scores, entry_invalidations, suppressed_numbers",
        rounds=rounds,
        rate=rate,
        rate_seconds=rate_seconds,
        flat_seconds=flat_seconds,
        switch=switch,
        after=switch.count_invalidations,
    )
    switch(False)  # the later phases run as before: hours always, the list empty
    return runs


def print_rules_summary(runs: Runs, base_rate: float, switch: RulesSwitch) -> bool:
    """The comparison issue 14 asks for; False when it misses, or when a hand-out was turned
    down for suppression or a cap or the queue ran dry in a run (not like for like)."""
    print(
        f"\nCALLING RULES  on: hours {RULES_ON_HOURS!r} + holidays + {len(switch.hashes):,}"
        " suppressed numbers; off: hours 'always', empty list; caps at the defaults in both;"
        " per mode: every run's figure, then pooled (p99 over all the paced runs' next-user"
        " latencies, flat out as the mean of the runs)"
    )

    def refusals(on: bool, pairs: list[tuple[ModeResult, ModeResult]]) -> str:
        empty = sum(p.empty + f.empty for p, f in pairs)
        inv = switch.invalidations[on]
        return f"{inv['suppressed']} / {inv['attempt_cap']} / {empty}"

    met = print_alternating_summary(
        runs,
        base_rate,
        ("rules off", "rules on"),
        "on / off",
        "suppressed / capped / 204 empty",
        refusals,
    )
    spoiled = sum(
        switch.invalidations[on]["suppressed"] + switch.invalidations[on]["attempt_cap"]
        for on in (False, True)
    ) + sum(p.empty + f.empty for on in (False, True) for p, f in runs[on])
    print(
        f"hand-outs refused for suppression or a cap, or 204 (queue dry), in the compared runs:"
        f" {spoiled} ({'OK' if spoiled == 0 else 'NOT like for like'})"
    )
    return met and spoiled == 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the PostgreSQL")
    parser.add_argument("--quick", action="store_true", help="10,000 entries, 5 s per mode")
    parser.add_argument("--entries", type=int, default=None, help="queue size (100,000)")
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=10, help="DB_POOL_SIZE per worker")
    parser.add_argument("--max-overflow", type=int, default=0, help="DB_MAX_OVERFLOW per worker")
    parser.add_argument("--rates", default="10,50,100", help="fixed rates, cycles/s")
    parser.add_argument("--rate-seconds", type=float, default=None, help="per rate (20)")
    parser.add_argument("--flat-seconds", type=float, default=None, help="flat out (30)")
    parser.add_argument("--baseline-seconds", type=float, default=None, help="baseline (20)")
    parser.add_argument("--profile-seconds", type=float, default=None, help="py-spy (10)")
    parser.add_argument("--no-profile", action="store_true", help="skip py-spy")
    parser.add_argument(
        "--callbacks",
        action="store_true",
        help="also compare runs with and without callbacks (at --callback-rate and flat out)",
    )
    parser.add_argument(
        "--callback-share", type=float, default=0.05, help="hand-outs completed with call_back"
    )
    parser.add_argument(
        "--callback-delay", type=float, default=None, help="callback_at ahead, s (5; quick 2)"
    )
    parser.add_argument("--callback-rate", type=float, default=50.0, help="paced rate compared")
    parser.add_argument(
        "--callback-rounds", type=int, default=2, help="pairs of runs, alternating (ABBA...)"
    )
    parser.add_argument(
        "--rules",
        action="store_true",
        help="also compare runs with the calling rules off and on (issue 14)",
    )
    parser.add_argument(
        "--suppressed", type=int, default=SUPPRESSED_NUMBERS, help="numbers on the list, rules on"
    )
    parser.add_argument("--rules-rate", type=float, default=50.0, help="paced rate compared")
    parser.add_argument(
        "--rules-rounds", type=int, default=2, help="pairs of runs, alternating (ABBA...)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args(argv)

    quick = args.quick
    entries = args.entries or (10_000 if quick else 100_000)
    rate_seconds = args.rate_seconds or (5.0 if quick else 20.0)
    flat_seconds = args.flat_seconds or (5.0 if quick else 30.0)
    baseline_seconds = args.baseline_seconds or (3.0 if quick else 20.0)
    profile_seconds = args.profile_seconds or (3.0 if quick else 10.0)
    bare_seconds = 3.0 if quick else 8.0
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    sequential_cycles = 100 if quick else 200
    callback_delay = args.callback_delay or (2.0 if quick else 5.0)
    inproc_cycles = 100 if quick else 300
    dbs = (STORE_DB, REPLICA_DB)

    started = time.perf_counter()
    load_start = load_average()
    print(f"Load average at start: {load_start} ({os.cpu_count()} CPUs)")
    store_url, replica_url, n_users = build(args.server, entries)
    populate(store_url, replica_url, entries)
    tokens = create_agents(store_url, args.agents)
    if args.rules:
        [supervisor] = create_agents(store_url, 1, "supervisor", "bench-supervisor")
        with step(f"hash {args.suppressed:,} numbers for the suppression list"):
            hashes = suppression_hashes(SUPPRESSION_KEY, args.suppressed)
    maintain(store_url)

    store_max = args.workers * (args.pool_size + args.max_overflow)
    # The replica pool is sized from the same settings as the store's (app/replica/reader.py).
    replica_max = store_max
    print(
        f"Pools: store DB_POOL_SIZE={args.pool_size} DB_MAX_OVERFLOW={args.max_overflow} per worker"
        f" x {args.workers} workers = {store_max}; replica the same, {replica_max};"
        f" load generator 2 (monitoring); at most"
        f" {store_max + replica_max + 2} of max_connections 100 (the baseline's {args.agents}"
        " run after the server has stopped)"
    )

    server: Server | None = None
    spy_pids: list[int] = []
    prom_dir = tempfile.mkdtemp(prefix="cq-bench-prom-")

    def cleanup() -> None:
        for pid in list(spy_pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if server is not None:
            server.stop()
        shutil.rmtree(prom_dir, ignore_errors=True)

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    accounting = Accounting(args.server, dbs)
    sampler = ConnectionSampler(args.server, dbs)
    results: list[ModeResult] = []
    profile_lines: list[str] = []
    compared: Runs = {}
    rules_compared: Runs = {}
    rules_switch: RulesSwitch | None = None
    runner = asyncio.Runner(loop_factory=_loop_factory())
    try:
        server = start_server(
            store_url,
            replica_url,
            prom_dir,
            workers=args.workers,
            pool_size=args.pool_size,
            max_overflow=args.max_overflow,
        )
        port = server.port
        accounting.worker_pids = server.workers()
        print(
            f"Server: uvicorn app.main:app --workers {args.workers} --no-access-log"
            f" --timeout-keep-alive {KEEP_ALIVE_SECONDS} on port {port} (pids"
            f" {server.proc.pid} -> {', '.join(map(str, server.workers()))}), validation on,"
            f" LEASE_SECONDS default, {args.agents} agents"
        )
        gen = LoadGenerator(server.base_url, tokens, callback_delay)
        runner.run(gen.warm_up())
        print(
            f"  client connections per worker after the warm-up: {server.connections_per_worker()}"
            " (each agent keeps one keep-alive connection; the kernel picks the worker)"
        )

        def measured(run: Callable[[], Any]) -> ModeResult:
            assert server is not None
            timings = scrape(server.base_url)
            sampler.start()
            before = accounting.snapshot()
            result: ModeResult = runner.run(run())
            after = accounting.snapshot()
            result.peak_connections = sampler.stop()
            result.cpu = accounting.delta(before, after)
            result.server = server_delta(timings, scrape(server.base_url))
            print_mode(result, dbs)
            results.append(result)
            return result

        print(f"\nFixed rates ({rate_seconds:g} s each, open loop over {args.agents} agents)")
        for rate in rates:
            measured(lambda rate=rate: gen.fixed_rate(rate, rate_seconds))  # type: ignore[misc]

        print(f"\nFlat out ({flat_seconds:g} s, {args.agents} agents back to back)")
        flat = measured(lambda: gen.flat_out(flat_seconds))

        if not args.no_profile:
            spy_out = Path(prom_dir) / "pyspy.txt"
            spy_error: list[str] = []
            lead = 1.0

            def profile() -> None:
                time.sleep(lead)
                assert server is not None
                error = run_pyspy(server.proc.pid, profile_seconds, spy_out, spy_pids)
                if error:
                    spy_error.append(error)

            print(f"\nFlat out again, under py-spy ({profile_seconds:g} s of sampling)")
            measured(lambda: gen.flat_out(profile_seconds + 2 * lead, profile, "flat, profiled"))
            profile_lines = spy_error or summarise_pyspy(spy_out)

        if args.callbacks:
            compared = compare_callbacks(
                runner,
                gen,
                measured,
                store_url,
                rounds=args.callback_rounds,
                share=args.callback_share,
                rate=args.callback_rate,
                rate_seconds=rate_seconds,
                flat_seconds=flat_seconds,
            )

        if args.rules:
            from app.rules.suppression import SuppressionList

            rules_switch = RulesSwitch(
                server.base_url,
                supervisor,
                store_url,
                hashes,
                SuppressionList(SUPPRESSION_KEY.encode()).fingerprint,
            )
            rules_compared = compare_rules(
                gen,
                measured,
                rules_switch,
                rounds=args.rules_rounds,
                rate=args.rules_rate,
                rate_seconds=rate_seconds,
                flat_seconds=flat_seconds,
            )

        print(
            f"\nThe HTTP floor: GET /healthz (async route, no I/O), {args.agents} agents back to"
            f" back for {bare_seconds:g} s, then one client alone (each row: requests, not cycles)"
        )
        measured(lambda: gen.bare_http(bare_seconds))
        measured(lambda: gen.bare_http(bare_seconds / 2, agents=1))

        print(f"\nOne agent alone over HTTP ({sequential_cycles} cycles, unloaded)")
        timings = scrape(server.base_url)
        alone = runner.run(gen.sequential(sequential_cycles))
        alone.server = server_delta(timings, scrape(server.base_url))
        print_mode(alone, dbs)
        handouts, log_lines = stop_load(runner, gen, server)
        server = None
    finally:
        with contextlib.suppress(Exception):
            runner.close()
        cleanup()
        server = None

    print("\n".join(log_lines))
    dup = duplicates(handouts)
    ledger = ledger_check(store_url)
    print("\nDuplicates seen by the agents (all modes):")
    print("  " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in dup.items()))
    print("  ledger: " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in ledger.items()))

    if profile_lines:
        print(f"\npy-spy, both workers, {profile_seconds:g} s during the flat-out run")
        print("\n".join(profile_lines))

    print("\nWhere one cycle's time goes (in-process replay of the route bodies, no HTTP)")
    inproc_ms, breakdown = in_process_breakdown(store_url, replica_url, tokens[0], inproc_cycles)
    print("\n".join(breakdown))
    http_ms = 1000 * alone.seconds / max(alone.cycles, 1)
    print(
        f"  one agent over HTTP: {http_ms:.2f} ms per cycle; in process {inproc_ms:.2f} ms:"
        f" HTTP + uvicorn + FastAPI + threadpool + client add {http_ms - inproc_ms:.2f} ms"
        " per cycle (two requests)"
    )

    print(f"\nRaw-SQL baseline ({args.agents} psycopg connections, autocommit, flat out)")
    with step("reset the queue (entries back to pending, ledger emptied, VACUUM, CHECKPOINT)"):
        admin(store_url, [RESET_SQL, "DELETE FROM assignments", "DELETE FROM entry_invalidations"])
        maintain(store_url, f"{TABLE}, assignments, entry_invalidations")
    sampler.start()
    accounting.worker_pids = []
    base = baseline(store_url, args.agents, baseline_seconds, accounting.snapshot)
    base_peak = sampler.stop()
    if "error" in base:
        print(f"  baseline failed: {base['error']}")
        base_rate = float("nan")
    else:
        base_rate = base["rate"]
        cpu = base_cpu = accounting.delta(base["before"], base["after"])
        print(
            f"  {base['cycles']:,} cycles in {base['seconds']:.1f} s = {base_rate:.0f} cycles/s;"
            f" errors: {base['errors'] or 'none'}"
            + ("; the queue ran dry (rate over the time until then)" if base["ran_dry"] else "")
        )
        print("    " + cpu_line(cpu, base["cycles"]))
        print(f"    peak connections {base_peak[1]} ours / {base_peak[0]} on the server")

    accounting.close()
    shutil.rmtree(prom_dir, ignore_errors=True)
    if not args.keep:
        drop_databases(args.server, dbs)

    by_name = {r.name: r for r in results}
    at50 = by_name.get("50 cycles/s")
    ratio = flat.rate / base_rate if base_rate == base_rate and base_rate else float("nan")
    print("\n" + "=" * 100)
    print(
        f"SUMMARY  queue {entries:,} entries ({n_users:,} users), {args.agents} agents, uvicorn"
        f" x{args.workers}, store pool {args.pool_size}+{args.max_overflow}/worker, replica pool"
        f" {args.pool_size}+{args.max_overflow}/worker, validation on"
    )
    print(f"load average: start {load_start}, end {load_average()} ({os.cpu_count()} CPUs)")
    header = (
        f"{'mode':<16}{'cycles':>8}{'cycles/s':>10}{'nu p50':>8}{'p95':>8}{'p99':>8}{'max':>8}"
        f"{'cp p50':>8}{'cp p99':>8}  {'CPU ms/cycle w/pg/gen':<22}non-2xx"
    )
    print(header)
    print("-" * len(header))
    for r in [*results, alone]:
        cpu = r.cpu
        cpu_text = (
            f"{1000 * cpu['workers'] / r.cycles:.1f}/{1000 * cpu['pg'] / r.cycles:.1f}"
            f"/{1000 * cpu['loadgen'] / r.cycles:.1f}"
            if cpu and r.cycles
            else "-"
        )
        print(
            f"{r.name:<16}{r.cycles:>8,}{r.rate:>10.1f}{pct(r.next_ms, 50):>8.1f}"
            f"{pct(r.next_ms, 95):>8.1f}{pct(r.next_ms, 99):>8.1f}"
            f"{max(r.next_ms, default=float('nan')):>8.1f}{pct(r.complete_ms, 50):>8.1f}"
            f"{pct(r.complete_ms, 99):>8.1f}  {cpu_text:<22}{r.non_2xx()}"
        )
    if "error" not in base:
        print(f"{'raw baseline':<16}{base['cycles']:>8,}{base_rate:>10.1f}")
    print("-" * len(header))
    print("latencies in ms (nu = next-user, cp = complete), measured by the load generator")
    dup_total = (
        dup["users_held_by_two_agents_at_once"]
        + dup["assignment_ids_handed_out_twice"]
        + ledger["users_in_two_ledger_rows"]
    )
    print(
        f"duplicates (agents' side + ledger): {dup_total} ({'OK' if dup_total == 0 else 'FAILED'})"
    )
    if at50:
        p99 = pct(at50.next_ms, 99)
        print(
            f"p99 next-user at 50 cycles/s: {p99:.1f} ms, target < {TARGET_P99_MS:.0f} ms:"
            f" {'met' if p99 < TARGET_P99_MS else 'MISSED'}"
        )
    verdict = "MISSED"
    if ratio >= AIM_RATIO:
        verdict = "met, and the aim of a fifth too"
    elif ratio >= TARGET_RATIO:
        verdict = "met (aim of a fifth missed)"
    print(
        f"flat out {flat.rate:.1f} cycles/s vs raw baseline {base_rate:.0f} cycles/s: ratio"
        f" {ratio:.3f} (target >= {TARGET_RATIO}, aim {AIM_RATIO}): {verdict}"
    )
    if flat.cpu and flat.cycles and "error" not in base and base["cycles"]:
        cores = os.cpu_count() or 2
        f_ms = 1000 * (flat.cpu["workers"] + flat.cpu["pg"] + flat.cpu["loadgen"]) / flat.cycles
        b_ms = 1000 * (base_cpu["pg"] + base_cpu["loadgen"]) / base["cycles"]
        print(
            f"CPU-bound ceilings if nothing else ran on the {cores} CPUs ({cores}000 ms / CPU ms"
            f" per cycle): service {1000 * cores / f_ms:.0f} cycles/s ({f_ms:.1f} ms: workers"
            f" {1000 * flat.cpu['workers'] / flat.cycles:.1f} + PostgreSQL"
            f" {1000 * flat.cpu['pg'] / flat.cycles:.1f} + load generator"
            f" {1000 * flat.cpu['loadgen'] / flat.cycles:.1f}), baseline"
            f" {1000 * cores / b_ms:.0f} cycles/s ({b_ms:.2f} ms); ratio of ceilings"
            f" {b_ms / f_ms:.3f}"
        )
    if compared:
        print_callback_summary(compared, base_rate, args.callback_share, callback_delay)
    if rules_compared and rules_switch is not None:
        print_rules_summary(rules_compared, base_rate, rules_switch)
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    return 0


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]


if __name__ == "__main__":
    sys.exit(main())
