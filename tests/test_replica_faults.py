"""Replica faults (issue 5, item 2; SPEC 3.2, 3.3, 4.1, 4.3), on PostgreSQL and on MariaDB.

The service reaches its replica through a FaultProxy (tests/proxy.py) that the test cuts (reset
or silent blackhole), slows down, and heals, while the store stays healthy. What must hold:

* next-user answers 503 ReplicaUnavailable within a bounded time and writes nothing;
* a population fails the affected queues cleanly (500 with the full report, old snapshot and score
  rows untouched, no transition rows), and the next one after the heal succeeds;
* the health check says ``degraded`` while the replica is down, ``unhealthy`` once a population
  has failed; /readyz stays 200 with "replica": "error"; /healthz stays 200;
* healing the link is enough: the same process (same pools) serves again, no restart;
* nothing is lost: a claim cut mid-flight leaves its entry pending, and an outcome recorded
  while the replica is down still counts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import SQLAlchemyError

from app.auth.people import create_agent
from app.replica.schema import replica_metadata
from tests.factories import Replica as ReplicaRows
from tests.factories import add_scores, own_phone
from tests.proxy import FaultProxy

POPULATE = "/api/cron/populate-separated-queues"
UNSIGNED = "unsigned_users"
OUTSTANDING = "outstanding_requests"
NEXT_UNSIGNED = f"/api/queues/{UNSIGNED}/next-user"
UNSIGNED_USERS = (101, 102, 103)
OUTSTANDING_USERS = (201, 202, 203)

TIMEOUT_MS = 1000  # REPLICA_STATEMENT_TIMEOUT_MS (MySQL read timeout: 1 s)
BOUND = 8.0  # seconds: connect_timeout (5 s) plus headroom; anything longer is a hang
POPULATION_BOUND = 12.0  # two queues, each failing on its first replica read
CHECK_SECONDS = 0.2  # REPLICA_CHECK_SECONDS: the probes' background check
PROBE_BOUND = 1.0  # a probe answers within this, whatever the replica does
# The background check notices a dead replica within its interval plus the statement timeout
# (a check in flight longer than that counts as failed), or a connect timeout at worst.
NOTICE_BOUND = 8.0
MYSQL_ADMIN_DEFAULT = "mysql+pymysql://root@127.0.0.1:3306/test"
# Per test run, like the PostgreSQL databases: runs on the same machine must not share it.
MYSQL_DATABASE = f"cq_test_replica_faults_{os.getpid()}"
REPLICA_TABLES = [t.name for t in replica_metadata.sorted_tables]
# Store tables a replica fault must leave exactly as they were (population history aside).
STATE_TABLES = {
    "unsigned_users_queue": "id",
    "outstanding_requests_queue": "id",
    "user_call_scores": "user_id",
    "assignments": "id",
    "queue_transitions": "id",
    "entry_invalidations": "id",
}
REPLICA_ISSUE = "the claims replica is unreachable"

BUG_PG_HANG = (
    "BUG: the PostgreSQL replica engine has no client-side timeout. statement_timeout runs on"
    " the server and there are no TCP keepalives/tcp_user_timeout, so with the link blackholed"
    " the first statement on a pooled connection (the pre-ping's SELECT 1, or the read itself)"
    " never returns: next-user, the health check, /readyz and population hang (a hung"
    " population keeps the advisory lock: every later trigger gets 409) instead of failing"
    " within the bound"
)
BUG_PG_SLOW = (
    "BUG: statement_timeout only bounds execution on the server: with a replica link 3 s slow"
    " each way next-user took ~18 s (one round trip per statement) and answered 200 instead of"
    " a 503 within the bound, holding the queue entry's row lock and a store connection all along"
)
BUG_IDLE_RESET = (
    "BUG: the replica engine has no pool_pre_ping (dropped in 1b017c6) and no retry on a"
    " disconnect, so after the replica restarts (idle pooled connections reset, replica back"
    " up) the next request pays for the dead connection: next-user answers 503, the population's"
    " first queue fails (health 'unhealthy' until the next run) and the health check says"
    " 'degraded', although the replica answers"
)


# -- the replica on two engines, behind a proxy --------------------------------------------------


@dataclass(frozen=True)
class Backend:
    name: str
    engine: Engine  # direct connection: builds rows and holds locks, never through the proxy
    url: URL


@pytest.fixture(scope="session")
def mysql_faults_engine() -> Iterator[Engine]:
    admin_url = os.environ.get("REPLICA_TEST_MYSQL_URL", MYSQL_ADMIN_DEFAULT)
    admin = create_engine(admin_url, connect_args={"connect_timeout": 3})
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{MYSQL_DATABASE}`"))
            conn.execute(text(f"CREATE DATABASE `{MYSQL_DATABASE}` CHARACTER SET utf8mb4"))
    except SQLAlchemyError as exc:
        reason = (
            "MariaDB/MySQL replica unreachable at REPLICA_TEST_MYSQL_URL"
            f" ({make_url(admin_url).render_as_string(hide_password=True)}):"
            f" {type(getattr(exc, 'orig', None) or exc).__name__}"
        )
        if os.environ.get("CALLQUEUE_REQUIRE_MYSQL") == "1":
            pytest.fail(reason + " and CALLQUEUE_REQUIRE_MYSQL=1", pytrace=False)
        pytest.skip(reason)
    finally:
        admin.dispose()
    engine = create_engine(make_url(admin_url).set(database=MYSQL_DATABASE))
    replica_metadata.create_all(engine)
    yield engine
    engine.dispose()
    admin = create_engine(admin_url)
    try:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS `{MYSQL_DATABASE}`"))
    finally:
        admin.dispose()


@pytest.fixture
def backend(request: pytest.FixtureRequest, store_engine: Engine) -> Backend:
    if request.param == "postgresql":
        engine: Engine = request.getfixturevalue("replica_engine")  # truncated by conftest
    else:
        engine = request.getfixturevalue("mysql_faults_engine")
        with engine.begin() as conn:
            for table in REPLICA_TABLES:
                conn.execute(text(f"TRUNCATE TABLE {table}"))
    url = engine.url
    if url.host not in ("127.0.0.1", "localhost") or not url.port:
        pytest.skip(f"the {request.param} replica is not on 127.0.0.1 TCP; the proxy needs one")
    return Backend(request.param, engine, url)


def engines(*faults: str, xfail_pg: tuple[str, ...] = ()) -> Any:
    """Parametrize (backend, fault) over both engines; PostgreSQL combos in xfail_pg are bugs."""
    params = []
    for fault in faults:
        reason = BUG_PG_SLOW if fault == "slow" else BUG_PG_HANG
        pg_marks = [pytest.mark.xfail(strict=True, reason=reason)] if fault in xfail_pg else []
        params.append(pytest.param("postgresql", fault, marks=pg_marks, id=f"postgresql-{fault}"))
        params.append(pytest.param("mysql", fault, marks=pytest.mark.mysql, id=f"mysql-{fault}"))
    return pytest.mark.parametrize(("backend", "fault"), params, indirect=["backend"])


@dataclass
class Rig:
    backend: Backend
    proxy: FaultProxy
    client: TestClient
    store: Engine
    rows: ReplicaRows
    cron: dict[str, str]
    agent: dict[str, str]
    supervisor: dict[str, str]

    def fault(self, fault: str) -> None:
        if fault == "slow":
            self.proxy.slow(3)  # three times the statement timeout, each way
        else:
            self.proxy.cut("blackhole" if fault == "blackhole" else "reset")

    def next_user(self, headers: dict[str, str] | None = None) -> Any:
        return self.client.post(NEXT_UNSIGNED, headers=headers or self.agent)

    def health(self) -> Any:
        return self.client.post(POPULATE, headers=self.cron)

    def populate(self) -> Any:
        return self.client.get(POPULATE, headers=self.cron)


def _token(store: Engine, name: str, role: str) -> dict[str, str]:
    with store.begin() as conn:
        return {"Authorization": f"Bearer {create_agent(conn, name, role)}"}


@pytest.fixture
def check_seconds() -> float:
    """REPLICA_CHECK_SECONDS for the rig: slow by default, so the background check's own reads
    do not race the read a test is timing; the probe tests set CHECK_SECONDS."""
    return 300.0


@pytest.fixture
def rig(
    check_seconds: float,
    backend: Backend,
    make_client: Callable[..., TestClient],
    store_engine: Engine,
    cron_headers: dict[str, str],
) -> Iterator[Rig]:
    with FaultProxy(backend.url.port or 0) as proxy:
        proxied = backend.url.set(host="127.0.0.1", port=proxy.port)
        client = make_client(
            replica_database_url=proxied.render_as_string(hide_password=False),
            replica_statement_timeout_ms=TIMEOUT_MS,
            queue_low_watermark=0,  # three entries a queue is "enough": health starts healthy
            replica_check_seconds=check_seconds,
        )
        yield Rig(
            backend=backend,
            proxy=proxy,
            client=client,
            store=store_engine,
            rows=ReplicaRows(backend.engine),
            cron=cron_headers,
            agent=_token(store_engine, "alice", "agent"),
            supervisor=_token(store_engine, "sam", "supervisor"),
        )


def book(rig: Rig) -> None:
    """Three leads in each queue, populated through the (healthy) proxy."""
    for uid in UNSIGNED_USERS:
        rig.rows.unsigned(uid)
    for uid in OUTSTANDING_USERS:
        rig.rows.outstanding(uid)
    add_scores(
        rig.store,
        [{"user_id": u, "current_queue_type": UNSIGNED} for u in UNSIGNED_USERS]
        + [{"user_id": u, "current_queue_type": OUTSTANDING} for u in OUTSTANDING_USERS],
    )
    got = rig.populate()
    assert got.status_code == 200, got.text
    assert {q: got.json()["queues"][q]["populated"] for q in (UNSIGNED, OUTSTANDING)} == {
        UNSIGNED: 3,
        OUTSTANDING: 3,
    }


# -- helpers -------------------------------------------------------------------------------------


def store_state(store: Engine) -> dict[str, list[dict[str, Any]]]:
    with store.connect() as conn:
        return {
            table: [
                dict(r)
                for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY {key}")).mappings()
            ]
            for table, key in STATE_TABLES.items()
        }


def last_run(store: Engine) -> dict[str, Any]:
    with store.connect() as conn:
        run = conn.execute(
            text("SELECT id, status, error FROM population_runs ORDER BY started_at DESC LIMIT 1")
        ).one()
        queues = conn.execute(
            text(
                "SELECT queue_type, status, error FROM population_run_queues WHERE run_id = :r"
                " ORDER BY queue_type"
            ),
            {"r": run.id},
        ).all()

    # The driver's exception name depends on whether a pooled connection was cut (deadline:
    # OperationalError) or a fresh one could not connect (ConnectionTimeout).
    def same(text: str | None) -> str | None:
        return text and text.replace("(ConnectionTimeout)", "(OperationalError)")

    return {
        "status": run.status,
        "error": same(run.error),
        "queues": [(q, status, same(err)) for q, status, err in queues],
    }


def bounded(rig: Rig, call: Callable[[], Any], bound: float = BOUND) -> tuple[Any, float]:
    """Run ``call`` in a thread and time it. If it outlives ``bound`` the link is reset (so the
    hung request ends and the test can go on to fail cleanly) and the time reported is the time
    at which it was given up on."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = call()
        except BaseException as exc:
            box["error"] = exc

    started = time.monotonic()
    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(bound)
    elapsed = time.monotonic() - started
    if thread.is_alive():
        rig.proxy.cut("reset")
        thread.join(30)
        assert not thread.is_alive(), "the request still hung after the replica link was reset"
    if "error" in box:
        raise box["error"]
    return box["result"], elapsed


def expected_cause(backend: Backend, fault: str) -> str:
    """The driver exception ReplicaUnavailable names, per engine and fault."""
    # A pooled connection cut off by a blackhole is shut down by the reader's client-side
    # deadline (OperationalError); only a fresh connection would time out on connect.
    return "OperationalError"


def assert_replica_unavailable(response: Any, cause: str) -> None:
    assert (response.status_code, response.json()) == (
        503,
        {"error": "ReplicaUnavailable", "detail": f"the claims replica did not answer ({cause})"},
    )


def assert_claims_work_again(
    rig: Rig, user_id: int = UNSIGNED_USERS[0], position: int = 1
) -> dict[str, Any]:
    got = rig.next_user()
    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["user_id"], body["queue_position"], body["resumed"]) == (user_id, position, False)
    assert body["user"]["phone_number"] == own_phone(body["user_id"])
    return dict(body)


# -- next-user -----------------------------------------------------------------------------------


@pytest.mark.slow
@engines("reset", "blackhole", "slow")
def test_next_user_answers_503_quickly_and_writes_nothing(rig: Rig, fault: str) -> None:
    book(rig)
    before = store_state(rig.store)

    rig.fault(fault)
    got, elapsed = bounded(rig, rig.next_user)

    assert elapsed < BOUND, f"next-user took {elapsed:.1f} s with the replica {fault}"
    assert_replica_unavailable(got, expected_cause(rig.backend, fault))
    assert store_state(rig.store) == before

    rig.proxy.heal()
    assert_claims_work_again(rig)


@engines("reset")
@pytest.mark.parametrize(
    "flags",
    [
        {"ENABLE_QUEUE_VALIDATION": False},  # contacts are still read from the replica
        {"MIGRATION_MODE": "legacy-only"},  # direct mode
        {"MIGRATION_MODE": "dual"},
    ],
    ids=["validation-off", "direct", "dual"],
)
def test_next_user_is_503_in_every_serving_mode(
    rig: Rig, fault: str, flags: dict[str, Any]
) -> None:
    book(rig)
    put = rig.client.put("/api/admin/flags", headers=rig.supervisor, json=flags)
    assert put.status_code == 200, put.text
    before = store_state(rig.store)

    rig.fault(fault)
    got, elapsed = bounded(rig, rig.next_user)

    assert elapsed < BOUND
    assert_replica_unavailable(got, expected_cause(rig.backend, fault))
    assert store_state(rig.store) == before

    rig.proxy.heal()
    got = rig.next_user()
    assert got.status_code == 200, got.text
    assert got.json()["user_id"] == UNSIGNED_USERS[0]


@engines("statement")
def test_replica_slower_than_its_statement_timeout_is_503(rig: Rig, fault: str) -> None:
    """The replica itself is slow (a lock makes the users query wait): the statement timeout
    (PostgreSQL) or the read timeout (MySQL) ends the read and the claim answers 503."""
    book(rig)
    before = store_state(rig.store)
    locker = rig.backend.engine.connect()
    try:
        if rig.backend.name == "mysql":
            locker.execute(text("LOCK TABLES users WRITE"))
        else:
            locker.begin()
            locker.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        got, elapsed = bounded(rig, rig.next_user)
    finally:
        if rig.backend.name == "mysql":
            locker.execute(text("UNLOCK TABLES"))
        locker.rollback()
        locker.close()

    assert 0.9 < elapsed < 3.0, f"next-user took {elapsed:.1f} s against a 1 s timeout"
    cause = "OperationalError" if rig.backend.name == "mysql" else "QueryCanceled"
    assert_replica_unavailable(got, cause)
    assert store_state(rig.store) == before

    assert_claims_work_again(rig)


@engines("reset")
def test_claim_in_flight_when_the_replica_is_cut_leaves_its_entry_pending(
    rig: Rig, fault: str
) -> None:
    book(rig)
    before = store_state(rig.store)
    # Slow enough that the claim is caught reading the replica with the entry locked, quick
    # enough for MySQL's 1 s read timeout not to fire on its own.
    rig.proxy.slow(0.3)
    box: dict[str, Any] = {}
    claim = threading.Thread(target=lambda: box.setdefault("got", rig.next_user()), daemon=True)
    claim.start()
    deadline = time.monotonic() + 5
    with rig.store.connect() as conn:
        while True:
            free = conn.execute(
                text(
                    "SELECT count(*) FROM (SELECT id FROM unsigned_users_queue"
                    " WHERE user_id = :u FOR UPDATE SKIP LOCKED) AS e"
                ),
                {"u": UNSIGNED_USERS[0]},
            ).scalar_one()
            conn.rollback()
            if not free:
                break
            assert time.monotonic() < deadline, "the claim never locked the first entry"
            time.sleep(0.02)
    time.sleep(0.1)  # inside the replica read (one statement, >= 0.6 s per round trip)
    assert claim.is_alive(), "the claim finished before the replica was cut"

    rig.proxy.cut(fault)
    claim.join(BOUND)

    assert not claim.is_alive()
    assert_replica_unavailable(box["got"], "OperationalError")
    after = store_state(rig.store)
    assert after == before
    entry = next(e for e in after["unsigned_users_queue"] if e["user_id"] == UNSIGNED_USERS[0])
    assert (entry["status"], entry["assigned_to_agent"], entry["queue_position"]) == (
        "pending",
        None,
        1,
    )

    rig.proxy.heal()
    assert_claims_work_again(rig)


@engines("reset")
def test_outcome_recorded_while_the_replica_is_down_still_counts(rig: Rig, fault: str) -> None:
    book(rig)
    held = assert_claims_work_again(rig)

    rig.fault(fault)
    done, elapsed = bounded(
        rig,
        lambda: rig.client.post(
            f"/api/assignments/{held['assignment_id']}/complete",
            headers=rig.agent,
            json={"outcome": "no_answer"},
        ),
    )

    assert elapsed < BOUND
    assert done.status_code == 200, done.text
    body = done.json()
    assert (body["status"], body["outcome"]) == ("completed", "no_answer")
    assert (body["score"]["current_score"], body["score"]["current_queue_type"]) == (1, UNSIGNED)
    with rig.store.connect() as conn:
        assert (
            conn.execute(
                text("SELECT status FROM unsigned_users_queue WHERE user_id = :u"),
                {"u": held["user_id"]},
            ).scalar_one()
            == "completed"
        )
        assert conn.execute(text("SELECT count(*) FROM queue_transitions")).scalar_one() == 0

    rig.proxy.heal()
    assert_claims_work_again(rig, UNSIGNED_USERS[1], position=2)


@engines("restart")
@pytest.mark.parametrize("route", ["next-user", "population", "health"])
def test_replica_restart_while_idle_is_invisible(rig: Rig, fault: str, route: str) -> None:
    """The replica restarts (every pooled connection is reset) and is back before the next
    request: that request must not fail because of connections that died while idle."""
    book(rig)
    assert rig.proxy.connections > 0  # the pool holds idle replica connections
    before = store_state(rig.store)

    rig.proxy.reset_connections()  # the link itself stays up

    if route == "next-user":
        assert_claims_work_again(rig)
    elif route == "population":
        got = rig.populate()
        assert got.status_code == 200, got.text
        assert store_state(rig.store)["user_call_scores"] == before["user_call_scores"]
    else:
        _assert_health(rig.health(), 200, "healthy", "ok", [])


# -- population ----------------------------------------------------------------------------------


def _failed_queue(report: dict[str, Any], error: str) -> dict[str, Any]:
    # Once a pooled connection is cut off, the next queue may open a fresh one, whose connect
    # times out instead: either way the cause names the replica.
    if report["error"] in (error, "the claims replica did not answer (ConnectionTimeout)"):
        error = report["error"]
    return {
        "status": "failed",
        "eligible": 0,
        "invalid": 0,
        "populated": 0,
        "removed": 0,
        "kept_assigned": 0,
        "duration_ms": report["duration_ms"],
        "error": error,
    }


@pytest.mark.slow
@engines("reset", "blackhole")
def test_population_with_the_replica_down_fails_cleanly(rig: Rig, fault: str) -> None:
    book(rig)
    before = store_state(rig.store)

    rig.fault(fault)
    got, elapsed = bounded(rig, rig.populate, bound=POPULATION_BOUND)

    assert elapsed < POPULATION_BOUND, f"population took {elapsed:.1f} s with the replica {fault}"
    error = f"the claims replica did not answer ({expected_cause(rig.backend, fault)})"
    assert got.status_code == 500, got.text
    body = got.json()
    assert set(body) == {
        "success",
        "run_id",
        "started_at",
        "finished_at",
        "duration_ms",
        "next_run_at",
        "queues",
    }
    assert body["success"] is False
    assert body["queues"] == {
        q: _failed_queue(body["queues"][q], error) for q in (UNSIGNED, OUTSTANDING)
    }
    assert store_state(rig.store) == before  # snapshots, scores, no transition rows
    assert last_run(rig.store) == {
        "status": "failed",
        "error": f"{UNSIGNED}: {error}; {OUTSTANDING}: {error}",
        "queues": [(OUTSTANDING, "failed", error), (UNSIGNED, "failed", error)],
    }

    rig.proxy.heal()
    again = rig.populate()
    assert again.status_code == 200, again.text
    assert {
        q: (r["status"], r["populated"], r["removed"]) for q, r in again.json()["queues"].items()
    } == {UNSIGNED: ("succeeded", 3, 3), OUTSTANDING: ("succeeded", 3, 3)}


@engines("reset")
def test_population_of_one_queue_with_the_replica_down(rig: Rig, fault: str) -> None:
    book(rig)
    before = store_state(rig.store)

    rig.fault(fault)
    got = rig.client.get(POPULATE, params={"queue": OUTSTANDING}, headers=rig.cron)

    assert got.status_code == 500, got.text
    queues = got.json()["queues"]
    error = f"the claims replica did not answer ({expected_cause(rig.backend, fault)})"
    assert queues[OUTSTANDING] == _failed_queue(queues[OUTSTANDING], error)
    assert queues[UNSIGNED] == {**_failed_queue(queues[UNSIGNED], None), "status": "skipped"}
    assert store_state(rig.store) == before


# -- health and readiness ------------------------------------------------------------------------


def _assert_health(
    got: Any, status_code: int, status: str, replica: str, issues: list[str]
) -> dict[str, Any]:
    body = got.json()
    assert (got.status_code, body["status"], body["replica"], body["database"], body["issues"]) == (
        status_code,
        status,
        replica,
        "ok",
        issues,
    )
    return dict(body)


def probe(rig: Rig, call: Callable[[], Any]) -> Any:
    """One probe, which must answer within PROBE_BOUND whatever the replica is doing."""
    got, elapsed = bounded(rig, call, bound=PROBE_BOUND * 5)
    assert elapsed < PROBE_BOUND, f"a probe took {elapsed:.2f} s"
    return got


def until_replica(rig: Rig, state: str) -> float:
    """Probe /readyz (each answer within a second, always 200) until it reports ``state``;
    returns how long the background check took to notice."""
    started = time.monotonic()
    while True:
        ready = probe(rig, lambda: rig.client.get("/readyz"))
        assert ready.status_code == 200, ready.text
        if ready.json()["replica"] == state:
            return time.monotonic() - started
        assert time.monotonic() - started < NOTICE_BOUND, f"/readyz never said replica {state}"
        time.sleep(0.05)


@pytest.mark.slow
@engines("blackhole", "slow", "reset")
@pytest.mark.parametrize("check_seconds", [CHECK_SECONDS])
def test_probes_never_wait_on_the_replica(rig: Rig, fault: str) -> None:
    """Issue 11, item 1: with the replica blackholed (or slowed, or refusing), /readyz and the
    health check answer within a second every time; the replica's state comes from the
    background check, which says "error" once it has noticed, and "ok" again after the heal."""
    book(rig)
    assert probe(rig, rig.health).json()["replica"] == "ok"

    rig.fault(fault)
    noticed = until_replica(rig, "error")
    assert noticed < NOTICE_BOUND
    for _ in range(3):  # and it stays quick while the outage lasts
        ready = probe(rig, lambda: rig.client.get("/readyz"))
        assert (ready.status_code, ready.json()) == (
            200,
            {
                "status": "ready",
                "database": "ok",
                "schema": "current",
                "replica": "error",
                "suppression_key": "ok",
            },
        )
        _assert_health(probe(rig, rig.health), 200, "degraded", "error", [REPLICA_ISSUE])

    rig.proxy.heal()
    until_replica(rig, "ok")
    _assert_health(probe(rig, rig.health), 200, "healthy", "ok", [])


@pytest.mark.slow
@engines("reset", "blackhole")
@pytest.mark.parametrize("check_seconds", [CHECK_SECONDS])
def test_health_while_the_replica_is_down_and_after_it_heals(rig: Rig, fault: str) -> None:
    book(rig)
    _assert_health(rig.health(), 200, "healthy", "ok", [])

    rig.fault(fault)
    until_replica(rig, "error")
    _assert_health(probe(rig, rig.health), 200, "degraded", "error", [REPLICA_ISSUE])
    ready = probe(rig, lambda: rig.client.get("/readyz"))
    assert (ready.status_code, ready.json()) == (
        200,
        {
            "status": "ready",
            "database": "ok",
            "schema": "current",
            "replica": "error",
            "suppression_key": "ok",
        },
    )
    live = rig.client.get("/healthz")
    assert (live.status_code, live.json()) == (200, {"status": "alive"})

    # The failing population itself is covered above for both faults; fail it fast here.
    rig.proxy.cut("reset")
    failed, _ = bounded(rig, rig.populate, bound=POPULATION_BOUND)
    assert failed.status_code == 500, failed.text
    error = f"the claims replica did not answer ({expected_cause(rig.backend, 'reset')})"
    population_issues = [
        f"the last population of {q} failed: {error}" for q in (UNSIGNED, OUTSTANDING)
    ]
    body = _assert_health(
        probe(rig, rig.health), 503, "unhealthy", "error", [REPLICA_ISSUE, *population_issues]
    )
    assert (body["last_run"]["status"], body["last_run"]["error"]) == (
        "failed",
        f"{UNSIGNED}: {error}; {OUTSTANDING}: {error}",
    )
    ready = rig.client.get("/readyz")
    assert (ready.status_code, ready.json()["replica"]) == (200, "error")

    # Healed: the replica answers again (the background check sees it on its next round), but
    # the failed run still counts until a population succeeds.
    rig.proxy.heal()
    until_replica(rig, "ok")
    _assert_health(rig.health(), 503, "unhealthy", "ok", population_issues)
    assert rig.populate().status_code == 200
    _assert_health(rig.health(), 200, "healthy", "ok", [])
    assert_claims_work_again(rig)
