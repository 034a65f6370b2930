"""PgBouncer in transaction pooling mode (issue 11, item 5), the way the README recommends it.

Debian's PgBouncer (1.18) in front of the tests' PostgreSQL, pool_mode=transaction, 8 server
connections per database, ``ignore_startup_parameters = extra_float_digits,options,
application_name`` (tests/pgbouncer.py). The service runs as real processes with DATABASE_URL
through the pooler and DATABASE_DIRECT_URL straight to PostgreSQL (which is how it knows there is
a pooler: DB_TRANSACTION_POOLING is not set), and is driven over HTTP only, as dashboards,
schedulers and supervisors drive it:

* next-user and complete, from many agents at once, over and over (psycopg would have prepared
  those statements after five executions; through the pooler those answered 500 before);
* the flags, read and changed again and again;
* the built-in scheduler's jobs;
* two populations triggered at once: one 200, one 409 (the lock is a session lock, held on the
  direct connection);
* the session bounds (lock_timeout here) in force for a completion's autocommit statement;
* DATABASE_URL alone through the pooler: the startup options did not arrive, so the service
  prepares no statements there, and works (the pooler's sessions carry the bounds);
* and the combinations that cannot work refused with a message naming what is missing:
  DB_TRANSACTION_POOLING without a direct URL, and a pooler whose sessions lack the bounds.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from app.auth.people import create_agent
from app.db import SessionBoundsMissing, create_store_engine
from app.errors import ConfigError
from app.main import create_app
from app.queues.kinds import POPULATION_LOCK_KEY, SWAP_LOCK_KEY
from tests import pgbouncer
from tests.conftest import CRON_SECRET
from tests.processes import free_port, running_service, service_env
from tests.test_two_instances import seed

CRON = {"Authorization": f"Bearer {CRON_SECRET}"}
POPULATE = "/api/cron/populate-separated-queues"
AGENTS = 8
CYCLES = 8  # each agent: next-user then complete, more than psycopg's prepare threshold (5)


@pytest.fixture(scope="session")
def pgbouncer_port(pg_server: str) -> Iterator[int]:
    explicit = os.environ.get("PGBOUNCER_TEST_URL")
    if explicit:
        port = make_url(explicit).port
        assert port, "PGBOUNCER_TEST_URL has no port"
        yield port
        return
    if pgbouncer.binary() is None:
        reason = (
            "pgbouncer is not installed (apt-get install pgbouncer) and PGBOUNCER_TEST_URL is unset"
        )
        if os.environ.get("CALLQUEUE_REQUIRE_PGBOUNCER") == "1":
            pytest.fail(reason + " and CALLQUEUE_REQUIRE_PGBOUNCER=1", pytrace=False)
        pytest.skip(reason)
    server = make_url(pg_server)
    bouncer = pgbouncer.start(free_port(), server.host or "127.0.0.1", server.port or 5432)
    try:
        yield bouncer.port
    finally:
        bouncer.stop()


def through(url: str, port: int, database: str | None = None) -> str:
    pooled = make_url(url).set(host="127.0.0.1", port=port)
    if database:
        pooled = pooled.set(database=database)
    return pooled.render_as_string(hide_password=False)


@pytest.fixture
def pooled_env(
    store_url: str, replica_url: str, pgbouncer_port: int, store_engine: Engine
) -> dict[str, str]:
    return service_env(
        through(store_url, pgbouncer_port),
        replica_url,
        CRON_SECRET,
        DATABASE_DIRECT_URL=store_url,
        QUEUE_SIZE_LIMIT="500",
        DB_POOL_SIZE="10",
        DB_MAX_OVERFLOW="0",
    )


def tokens(store: Engine, prefix: str, n: int, role: str = "agent") -> list[dict[str, str]]:
    with store.begin() as conn:
        return [
            {"Authorization": f"Bearer {create_agent(conn, f'{prefix}-{i}', role)}"}
            for i in range(n)
        ]


def test_the_claim_path_flags_and_populations_work_through_pgbouncer(
    pooled_env: dict[str, str],
    store_engine: Engine,
    replica_engine: Engine,
    tmp_path: Path,
) -> None:
    seed(replica_engine, store_engine)
    agents = tokens(store_engine, "pooled-agent", AGENTS)
    (boss,) = tokens(store_engine, "pooled-boss", 1, "supervisor")

    with running_service(pooled_env, tmp_path / "serve.log", workers=2) as (_, base):
        http = httpx.Client(base_url=base, timeout=60)
        ready = http.get("/readyz")
        assert (ready.status_code, ready.json()["database"]) == (200, "ok")

        # -- two populations at once: one 200, one 409 ------------------------------------
        # The test holds the unsigned queue's swap lock, so whichever run wins the population
        # lock waits inside its swap while the other trigger meets the lock.
        holder = store_engine.connect()
        holder.execute(text("SELECT pg_advisory_lock(:k, 1)"), {"k": SWAP_LOCK_KEY})
        answers: list[httpx.Response] = []
        barrier = threading.Barrier(2)

        def trigger() -> None:
            barrier.wait()
            answers.append(httpx.get(f"{base}{POPULATE}", headers=CRON, timeout=60))

        threads = [threading.Thread(target=trigger) for _ in range(2)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(answers) < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert [a.status_code for a in answers] == [409], [a.text for a in answers]
        assert answers[0].json()["error"] == "PopulationRunning"
        with store_engine.connect() as conn:  # the winner holds the lock on a direct session
            holders = (
                conn.execute(
                    text(
                        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a"
                        " USING (pid) WHERE l.locktype = 'advisory' AND l.granted"
                        " AND l.objsubid = 1 AND ((l.classid::bigint << 32) | l.objid::bigint) = :k"
                    ),
                    {"k": POPULATION_LOCK_KEY},
                )
                .scalars()
                .all()
            )
        assert holders == ["callqueue"]
        holder.execute(text("SELECT pg_advisory_unlock(:k, 1)"), {"k": SWAP_LOCK_KEY})
        holder.close()
        for thread in threads:
            thread.join(60)
        assert sorted(a.status_code for a in answers) == [200, 409], [a.text for a in answers]
        assert next(a for a in answers if a.status_code == 200).json()["success"] is True

        # -- flags, read and changed again and again ----------------------------------------
        for i in range(CYCLES):
            mode = ("new-only", "dual")[i % 2]
            put = http.put("/api/admin/flags", headers=boss, json={"MIGRATION_MODE": mode})
            assert (put.status_code, put.json()["MIGRATION_MODE"]) == (200, mode), put.text
            got = http.get("/api/admin/flags", headers=boss)
            assert (got.status_code, got.json()["MIGRATION_MODE"]) == (200, mode), got.text
        assert (
            http.put(
                "/api/admin/flags", headers=boss, json={"MIGRATION_MODE": "new-only"}
            ).status_code
            == 200
        )

        # -- next-user and complete, many agents, many times ---------------------------------
        def work(auth: dict[str, str]) -> list[int]:
            users = []
            with httpx.Client(base_url=base, timeout=60) as own:
                for _ in range(CYCLES):
                    got = own.post("/api/queues/unsigned_users/next-user", headers=auth)
                    assert got.status_code == 200, got.text
                    body = got.json()
                    users.append(body["user_id"])
                    done = own.post(
                        f"/api/assignments/{body['assignment_id']}/complete",
                        headers=auth,
                        json={"outcome": "no_answer", "notes": "pooled"},
                    )
                    assert done.status_code == 200, done.text
                    assert done.json()["status"] == "completed"
            return users

        with ThreadPoolExecutor(AGENTS) as pool:
            handed = [u for users in pool.map(work, agents) for u in users]
        assert len(handed) == AGENTS * CYCLES
        assert Counter(handed).most_common(1)[0][1] == 1, "a user was handed out twice"
        ledger = http.get("/api/assignments", headers=boss, params={"limit": 500})
        assert ledger.status_code == 200
        assert Counter(i["status"] for i in ledger.json()["items"]) == {
            "completed": AGENTS * CYCLES
        }

        # -- the bounds hold for a completion's autocommit statement ------------------------
        # A row lock held elsewhere on the user's score row: the completion gives up after
        # lock_timeout (5 s, set on the pooler's server sessions) with a 503, never hangs.
        auth = agents[0]
        got = http.post("/api/queues/unsigned_users/next-user", headers=auth)
        assert got.status_code == 200, got.text
        held = got.json()
        locker = store_engine.connect()
        locker.execute(
            text("SELECT 1 FROM user_call_scores WHERE user_id = :u FOR UPDATE"),
            {"u": held["user_id"]},
        )
        started = time.monotonic()
        blocked = http.post(
            f"/api/assignments/{held['assignment_id']}/complete",
            headers=auth,
            json={"outcome": "no_answer"},
        )
        waited = time.monotonic() - started
        locker.rollback()
        locker.close()
        assert (blocked.status_code, blocked.json()["error"]) == (503, "ServiceBusy"), blocked.text
        assert 4.5 < waited < 10, waited
        done = http.post(
            f"/api/assignments/{held['assignment_id']}/complete",
            headers=auth,
            json={"outcome": "no_answer"},
        )
        assert done.status_code == 200, done.text

        # The pooler really multiplexed: the service's processes hold at most the pool's
        # server connections through it, beside the direct ones.
        with store_engine.connect() as conn:
            server_side = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND application_name = 'callqueue'"
                )
            ).scalar_one()
        assert server_side <= pgbouncer.POOL_SIZE + 2  # + a direct lock session at most


def test_the_scheduler_runs_its_jobs_through_pgbouncer(
    pooled_env: dict[str, str],
    store_engine: Engine,
    replica_engine: Engine,
    tmp_path: Path,
) -> None:
    seed(replica_engine, store_engine)
    (boss,) = tokens(store_engine, "sched-boss", 1, "supervisor")
    env = {**pooled_env, "SCHEDULER_ENABLED": "true"}
    with running_service(env, tmp_path / "serve.log", workers=2) as (_, base):
        deadline = time.monotonic() + 60
        while True:
            with store_engine.connect() as conn:
                jobs = dict(
                    conn.execute(
                        text(
                            "SELECT job, result FROM scheduler_ticks WHERE finished_at IS NOT NULL"
                        )
                    ).all()
                )
            if {"population", "queue_level_check", "lease_sweep", "discovery"} <= jobs.keys():
                break
            assert time.monotonic() < deadline, f"the scheduler's jobs did not all run: {jobs}"
            time.sleep(0.5)
        runs = httpx.get(f"{base}/api/population-runs", headers=boss, timeout=30)
    # The population job and the queue-level check (the queues are empty) may race for the
    # population lock: whichever gets it populates, the other reports that it was running.
    running = "skipped: a population was already running"
    assert not [r for r in jobs.values() if r.startswith("error")], jobs
    assert jobs["population"] in ("succeeded", running), jobs
    assert jobs["queue_level_check"] in ("nothing to do", running) or jobs[
        "queue_level_check"
    ].startswith("refilled"), jobs
    assert jobs["lease_sweep"] == "expired 0"
    assert jobs["discovery"].startswith("created "), jobs
    assert runs.status_code == 200
    scheduled = [r for r in runs.json()["items"] if r["trigger"].startswith("scheduler")]
    assert scheduled, runs.json()
    assert {r["status"] for r in scheduled} == {"succeeded"}, scheduled


# -- what cannot work is refused -------------------------------------------------------------


def test_pooling_without_a_direct_url_refuses_to_start(
    make_settings: Callable[..., Any], store_url: str, pgbouncer_port: int
) -> None:
    settings = make_settings(
        database_url=through(store_url, pgbouncer_port), db_transaction_pooling=True
    )
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL"):
        settings.check_server_ready()
    with pytest.raises(ConfigError, match="DATABASE_DIRECT_URL"):
        TestClient(create_app(settings)).__enter__()


@pytest.mark.parametrize("direct", [True, False], ids=["with-direct-url", "alone"])
def test_a_pooler_without_the_session_bounds_is_refused(
    make_settings: Callable[..., Any], store_url: str, pgbouncer_port: int, direct: bool
) -> None:
    """A pooler whose server sessions run without statement_timeout, lock_timeout,
    idle_in_transaction_session_timeout and UTC: the service will not start on it, saying which
    are missing, and a connection made later (the pooler reconfigured underneath) is refused, so
    requests answer 503 and /readyz says not ready instead of running unbounded. With
    DATABASE_URL alone (no pooling said anywhere) the bounds sent as startup options never
    arrive: refused the same way, and the message says what to set."""
    unbounded = through(store_url, pgbouncer_port, "cq_unbounded")
    settings = make_settings(
        database_url=unbounded, database_direct_url=store_url if direct else None
    )
    with pytest.raises(ConfigError, match="lock_timeout") as refused:
        TestClient(create_app(settings)).__enter__()
    assert "connect_query" in refused.value.detail
    assert ("startup options did not reach" in refused.value.detail) is not direct
    engine = create_store_engine(settings)
    try:
        with pytest.raises(SessionBoundsMissing, match="statement_timeout"), engine.connect():
            pass
    finally:
        engine.dispose()


@pytest.mark.parametrize("pooling", [None, False], ids=["unset", "false"])
def test_a_pooler_that_drops_the_startup_options_works_without_a_pooling_setting(
    make_client: Callable[..., TestClient],
    store_url: str,
    store_engine: Engine,
    replica_engine: Engine,
    pgbouncer_port: int,
    pooling: bool | None,
) -> None:
    """DATABASE_URL through the pooler and nothing saying so (or DB_TRANSACTION_POOLING=false):
    the startup options never reached PostgreSQL, which every new connection notices, so no
    statement is prepared there; next-user and complete run past psycopg's prepare threshold
    (they answered 500, "prepared statement _pg3_1 does not exist", before)."""
    seed(replica_engine, store_engine)
    (auth,) = tokens(store_engine, f"dropped-{pooling}", 1)
    client = make_client(
        database_url=through(store_url, pgbouncer_port), db_transaction_pooling=pooling
    )
    assert client.get("/readyz").status_code == 200
    cron = client.get(POPULATE, headers=CRON)
    assert cron.status_code == 200, cron.text
    for _ in range(CYCLES):
        got = client.post("/api/queues/unsigned_users/next-user", headers=auth)
        assert got.status_code == 200, got.text
        done = client.post(
            f"/api/assignments/{got.json()['assignment_id']}/complete",
            headers=auth,
            json={"outcome": "no_answer"},
        )
        assert done.status_code == 200, done.text


def test_the_pooled_engine_has_the_bounds_and_no_prepared_statements(
    make_settings: Callable[..., Any], store_url: str, pgbouncer_port: int
) -> None:
    settings = make_settings(
        database_url=through(store_url, pgbouncer_port),
        db_transaction_pooling=True,
        database_direct_url=store_url,
    )
    engine = create_store_engine(settings)
    try:
        for autocommit in (False, True):
            options = {"isolation_level": "AUTOCOMMIT"} if autocommit else {}
            with engine.connect().execution_options(**options) as conn:
                for _ in range(10):  # past psycopg's prepare threshold
                    row = conn.execute(
                        text(
                            "SELECT current_setting('statement_timeout'),"
                            " current_setting('lock_timeout'),"
                            " current_setting('idle_in_transaction_session_timeout'),"
                            " current_setting('TimeZone')"
                        )
                    ).one()
                    assert tuple(row) == ("1min", "5s", "2min", "UTC")
                assert conn.connection.driver_connection.prepare_threshold is None  # type: ignore[union-attr]
    finally:
        engine.dispose()
