"""Dead peers are noticed (issue 11, item 4).

* A host that vanishes mid-population frees the population lock within DEAD_PEER_TIMEOUT_SECONDS:
  the service runs as a real process whose lock connection (DATABASE_DIRECT_URL) goes through
  the test's TCP proxy; while its population holds the lock, the proxy is blackholed (bytes and
  FINs vanish) and the process is frozen (SIGSTOP), as a host that dropped off the network. The
  next trigger, on another instance, succeeds within the bound; the frozen run, resumed, finds
  its lock gone and writes nothing over the new snapshot.
* Every connection has keepalives and tcp_user_timeout: the store's and the replica's psycopg
  sockets, the server side of direct sessions, and pymysql's socket on a MariaDB replica.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.config import Settings
from app.db import create_direct_engine, create_store_engine, keepalive_timing
from app.queues.kinds import POPULATION_LOCK_KEY
from app.queues.population import population_lock
from app.replica.reader import create_replica_engine
from tests.conftest import CRON_SECRET, MYSQL_DEFAULT
from tests.factories import Replica as ReplicaRows
from tests.factories import add_scores
from tests.processes import running_service, service_env
from tests.proxy import FaultProxy

POPULATE = "/api/cron/populate-separated-queues"
CRON = {"Authorization": f"Bearer {CRON_SECRET}"}
LEASE = 4  # DEAD_PEER_TIMEOUT_SECONDS in the test (default 60)
UNSIGNED = (101, 102, 103)


def lock_holders(store: Engine) -> list[int]:
    with store.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND objsubid = 1 AND ((classid::bigint << 32) | objid::bigint) = :k"
                ),
                {"k": POPULATION_LOCK_KEY},
            ).scalars()
        )


def via(proxy: FaultProxy, url: str) -> str:
    return (
        make_url(url).set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    )


def snapshot(store: Engine) -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text("SELECT id, user_id, status FROM unsigned_users_queue ORDER BY id")
            )
        ]


@pytest.mark.slow
def test_a_vanished_population_host_frees_the_lock_within_the_bound(
    store_url: str,
    replica_url: str,
    store_engine: Engine,
    replica_engine: Engine,
    make_client: Callable[..., TestClient],
    tmp_path: Path,
) -> None:
    rows = ReplicaRows(replica_engine)
    for uid in UNSIGNED:
        rows.unsigned(uid)
    add_scores(
        store_engine, [{"user_id": u, "current_queue_type": "unsigned_users"} for u in UNSIGNED]
    )
    other = make_client()  # a second instance, healthy, on direct connections

    with (
        FaultProxy(make_url(store_url).port or 5432) as lock_link,
        FaultProxy(make_url(replica_url).port or 5432) as replica_link,
    ):
        env = service_env(
            store_url,
            via(replica_link, replica_url),
            CRON_SECRET,
            DATABASE_DIRECT_URL=via(lock_link, store_url),
            # A proxy of the test's, not a transaction pooler: DATABASE_URL is direct too.
            DB_TRANSACTION_POOLING="false",
            DEAD_PEER_TIMEOUT_SECONDS=str(LEASE),
            # The walk's replica read is slowed to keep the run (and its lock) going; its
            # client-side deadline must not end it first.
            REPLICA_STATEMENT_TIMEOUT_MS="60000",
        )
        with running_service(env, tmp_path / "vanishing.log") as (proc, base):
            replica_link.slow(4)  # the walk's replica read now takes 8 s or more
            answer: dict[str, httpx.Response] = {}
            run = threading.Thread(
                target=lambda: answer.setdefault(
                    "got", httpx.get(f"{base}{POPULATE}", headers=CRON, timeout=120)
                ),
                daemon=True,
            )
            run.start()
            deadline = time.monotonic() + 10
            while not lock_holders(store_engine):
                assert time.monotonic() < deadline, "the population never took its lock"
                time.sleep(0.05)
            (holder,) = lock_holders(store_engine)
            assert other.get(POPULATE, headers=CRON).status_code == 409

            # The host drops off the network: nothing reaches it or comes from it any more.
            lock_link.cut("blackhole")
            os.kill(proc.pid, signal.SIGSTOP)
            vanished = time.monotonic()
            try:
                statuses = []
                while True:
                    got = other.get(POPULATE, headers=CRON)
                    statuses.append(got.status_code)
                    if got.status_code != 409:
                        break
                    assert time.monotonic() - vanished < LEASE + 6, "the lock was never freed"
                    time.sleep(0.2)
                freed_after = time.monotonic() - vanished
                assert got.status_code == 200, got.text
                assert got.json()["queues"]["unsigned_users"]["populated"] == 3
                # Held while the lease ran (the last heartbeat was at most a quarter of it
                # before the cut), then freed by the server within it.
                assert LEASE * 0.5 <= freed_after <= LEASE + 2.5, freed_after
                assert holder not in lock_holders(store_engine)
                after_new_run = snapshot(store_engine)
            finally:
                os.kill(proc.pid, signal.SIGCONT)

            # The frozen run resumes: its lock is gone, so it writes nothing.
            replica_link.heal()
            run.join(90)
            assert not run.is_alive()
            stale = answer["got"]
            assert stale.status_code == 500, stale.text
            unsigned = stale.json()["queues"]["unsigned_users"]
            assert unsigned["status"] == "failed"
            assert "lock was lost" in unsigned["error"], unsigned
            assert snapshot(store_engine) == after_new_run
            lock_link.heal()


# -- keepalives on every connection ------------------------------------------------------------


def sockopts(fd: int) -> dict[str, int]:
    sock = socket.socket(fileno=os.dup(fd))
    try:
        return {
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "user_timeout_ms": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.close()


def expected(seconds: int) -> dict[str, int]:
    idle, interval, count = keepalive_timing(seconds)
    return {
        "keepalive": 1,
        "idle": idle,
        "interval": interval,
        "count": count,
        "user_timeout_ms": seconds * 1000,
    }


def test_keepalive_timing_fits_the_bound() -> None:
    for seconds in (2, 4, 10, 60, 600):
        idle, interval, count = keepalive_timing(seconds)
        assert idle + interval * count <= seconds
        assert idle + interval * (count + 1) > seconds * 0.8


@pytest.mark.parametrize("seconds", [60, 7])
def test_store_and_replica_connections_have_keepalives_both_ways(
    make_settings: Callable[..., Settings], seconds: int
) -> None:
    settings = make_settings(dead_peer_timeout_seconds=seconds)
    idle, interval, count = keepalive_timing(seconds)
    server_side = {
        "tcp_keepalives_idle": str(idle),
        "tcp_keepalives_interval": str(interval),
        "tcp_keepalives_count": str(count),
        "tcp_user_timeout": str(seconds * 1000),
    }
    for engine in (
        create_store_engine(settings),
        create_direct_engine(settings),
        create_replica_engine(settings),
    ):
        try:
            with engine.connect() as conn:
                pgconn = conn.connection.driver_connection.pgconn  # type: ignore[union-attr]
                assert sockopts(pgconn.socket) == expected(seconds), engine.url
                # The server's side of the session: a backend whose client host vanished ends
                # (and frees its locks) within the bound too.
                found = dict(
                    conn.execute(
                        text(
                            "SELECT name, setting FROM pg_settings WHERE name IN"
                            " ('tcp_keepalives_idle', 'tcp_keepalives_interval',"
                            " 'tcp_keepalives_count', 'tcp_user_timeout')"
                        )
                    ).all()
                )
                assert found == server_side, engine.url
        finally:
            engine.dispose()


@pytest.mark.mysql
def test_a_mysql_replica_socket_has_keepalives(make_settings: Callable[..., Settings]) -> None:
    admin_url = os.environ.get("REPLICA_TEST_MYSQL_URL", MYSQL_DEFAULT)
    probe = create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with probe.connect():
            pass
    except Exception as exc:
        if os.environ.get("CALLQUEUE_REQUIRE_MYSQL") == "1":
            pytest.fail(f"MariaDB unreachable and CALLQUEUE_REQUIRE_MYSQL=1: {exc}", pytrace=False)
        pytest.skip("MariaDB unreachable")
    finally:
        probe.dispose()
    settings = make_settings(replica_database_url=admin_url, dead_peer_timeout_seconds=30)
    engine = create_replica_engine(settings)
    try:
        with engine.connect() as conn:
            sock = conn.connection.driver_connection._sock  # type: ignore[union-attr]
            assert sockopts(sock.fileno()) == expected(30)
            assert conn.execute(text("SELECT 1")).scalar() == 1
    finally:
        engine.dispose()


def test_a_refused_mysql_replica_is_a_driver_error(make_settings: Callable[..., Settings]) -> None:
    """The keepalive hook opens the socket itself: a peer that refuses or resets must still
    surface as the driver's OperationalError (which the service reports as the replica failing),
    never as a bare ``ConnectionRefusedError`` that reads as a bug and answers 500."""
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        port = spare.getsockname()[1]  # closed again before the connect: nothing listens
    settings = make_settings(replica_database_url=f"mysql+pymysql://root@127.0.0.1:{port}/x")
    engine = create_replica_engine(settings)
    try:
        with pytest.raises(DBAPIError) as caught:
            engine.connect()
        assert type(caught.value.orig).__name__ == "OperationalError"
        assert caught.value.orig.args[0] == 2003
    finally:
        engine.dispose()


def test_the_population_lock_session_is_a_lease(
    make_settings: Callable[..., Settings], store_engine: Engine
) -> None:
    """The heartbeat keeps the lock's session alive for as long as the run lasts; when the
    heartbeats stop (the holder gone), the server ends the session and frees the lock within
    the lease."""
    settings = make_settings(dead_peer_timeout_seconds=2)
    lease = settings.dead_peer_timeout_seconds
    engine = create_direct_engine(settings)
    try:
        lock = population_lock(engine, lease)
        with lock.hold() as held:
            time.sleep(3 * lease)  # well past the lease
            held.check()  # still held: the heartbeat kept the session busy
            assert lock_holders(store_engine) == [held.pid]
        assert lock_holders(store_engine) == []

        with lock.hold() as held:
            held._stop.set()  # the holder stops beating, as a frozen or vanished host would
            stopped = time.monotonic()
            while lock_holders(store_engine):
                assert time.monotonic() - stopped < lease + 2, "the lease never ran out"
                time.sleep(0.05)
            assert lease * 0.5 <= time.monotonic() - stopped
    finally:
        engine.dispose()
