"""The refresh of a queue's snapshot (SPEC 3.2): what survives, what is dropped, and how the swap
stays atomic, single-flight and all-or-nothing per queue, observed from outside the service."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from app.queues.kinds import POPULATION_LOCK_KEY, SWAP_LOCK_KEY
from app.queues.runs import RunReport
from app.services import Services
from app.vocabulary import QueueType
from tests.factories import Replica, add_scores

UNSIGNED = "unsigned_users"
OUTSTANDING = "outstanding_requests"
CRON_PATH = "/api/cron/populate-separated-queues"
UQ = "unsigned_users_queue"
OQ = "outstanding_requests_queue"


# -- helpers ------------------------------------------------------------------------------------


def entries(engine: Engine, table: str) -> dict[int, dict[str, Any]]:
    """The queue table's rows by user id (a user has at most one row in these tests)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(f"SELECT id, user_id, status, assigned_to_agent FROM {table} ORDER BY user_id")
        ).mappings()
        return {row["user_id"]: dict(row) for row in rows}


def new_agent(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text(
                "INSERT INTO agents (name, display_name, role) VALUES (:name, :name, 'agent')"
                " RETURNING id"
            ),
            {"name": name},
        ).scalar_one()


def assign_entry(
    engine: Engine, table: str, queue_type: str, user_id: int, *, lease_seconds: int = 900
) -> tuple[int, uuid.UUID, uuid.UUID]:
    """Hand a user's pending entry to a new agent, as a claim would: (agent, assignment, entry)."""
    agent_id = new_agent(engine, f"agent-{user_id}")
    with engine.begin() as conn:
        entry = conn.execute(
            text(
                f"SELECT id, priority_score FROM {table} WHERE user_id = :u AND status = 'pending'"
            ),
            {"u": user_id},
        ).one()
        assignment_id = conn.execute(
            text(
                "INSERT INTO assignments (agent_id, user_id, queue_type, source, queue_entry_id,"
                " priority_score, status, lease_expires_at)"
                " VALUES (:agent, :user, :queue_type, 'queue', :entry, :score, 'active',"
                " now() + make_interval(secs => :lease)) RETURNING id"
            ),
            {
                "agent": agent_id,
                "user": user_id,
                "queue_type": queue_type,
                "entry": entry.id,
                "score": entry.priority_score,
                "lease": lease_seconds,
            },
        ).scalar_one()
        conn.execute(
            text(
                f"UPDATE {table} SET status = 'assigned', assigned_to_agent = :agent,"
                " assigned_at = now() WHERE id = :id"
            ),
            {"agent": agent_id, "id": entry.id},
        )
    return agent_id, assignment_id, entry.id


def unsigned_leads(replica: Replica, store: Engine, user_ids: list[int]) -> None:
    for uid in user_ids:
        replica.unsigned(uid)
    add_scores(store, [{"user_id": uid, "current_queue_type": UNSIGNED} for uid in user_ids])


def figures(report: RunReport, queue_type: str) -> dict[str, Any]:
    return report.as_dict()["queues"][queue_type]


def run_in_thread(target: Callable[[], Any]) -> tuple[threading.Thread, dict[str, Any]]:
    outcome: dict[str, Any] = {}

    def body() -> None:
        try:
            outcome["result"] = target()
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, outcome


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the condition")
        time.sleep(0.01)


# -- what survives a refresh --------------------------------------------------------------------


def test_assigned_entry_survives_untouched_and_is_counted(
    make_services: Callable[..., Services], replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, [1, 2])
    population = make_services().population()
    population.run(trigger="test")
    agent_id, assignment_id, entry_id = assign_entry(store_engine, UQ, UNSIGNED, 1)
    before = entries(store_engine, UQ)

    report = population.run(trigger="test")

    assert figures(report, UNSIGNED) | {"duration_ms": 0} == {
        "status": "succeeded",
        "eligible": 1,  # the assigned user is not a candidate
        "invalid": 0,
        "populated": 1,
        "removed": 1,  # user 2's old pending entry
        "kept_assigned": 1,
        "duration_ms": 0,
        "error": None,
    }
    after = entries(store_engine, UQ)
    assert after[1] == {
        "id": entry_id,
        "user_id": 1,
        "status": "assigned",
        "assigned_to_agent": agent_id,
    }
    assert after[2]["status"] == "pending"
    assert after[2]["id"] != before[2]["id"]
    with store_engine.connect() as conn:
        rows_for_user_1 = conn.execute(
            text("SELECT count(*) FROM unsigned_users_queue WHERE user_id = 1")
        ).scalar_one()
        ledger = conn.execute(
            text("SELECT status FROM assignments WHERE id = :id"), {"id": assignment_id}
        ).scalar_one()
    assert rows_for_user_1 == 1
    assert ledger == "active"


def test_assigned_entry_with_expired_lease_is_swept_and_requeued(
    make_services: Callable[..., Services], replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, [1, 2])
    population = make_services().population()
    population.run(trigger="test")
    _, assignment_id, entry_id = assign_entry(store_engine, UQ, UNSIGNED, 1, lease_seconds=-60)

    report = population.run(trigger="test")

    q = figures(report, UNSIGNED)
    assert (q["eligible"], q["populated"], q["removed"], q["kept_assigned"]) == (2, 2, 2, 0)
    with store_engine.connect() as conn:
        ledger = conn.execute(
            text("SELECT status, finished_at FROM assignments WHERE id = :id"),
            {"id": assignment_id},
        ).one()
    assert ledger.status == "expired"
    assert ledger.finished_at is not None
    after = entries(store_engine, UQ)
    assert after[1]["status"] == "pending"
    assert after[1]["assigned_to_agent"] is None
    assert after[1]["id"] != entry_id  # the old entry was dropped, a fresh one replaces it


def test_finished_entries_of_the_old_snapshot_are_dropped_and_counted(
    make_services: Callable[..., Services], replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, [1, 2, 3, 4])
    population = make_services().population()
    population.run(trigger="test")
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE unsigned_users_queue SET status = CASE user_id"
                " WHEN 1 THEN 'completed' WHEN 2 THEN 'skipped' WHEN 3 THEN 'invalid' END"
                " WHERE user_id IN (1, 2, 3)"
            )
        )
    old_ids = {e["id"] for e in entries(store_engine, UQ).values()}

    report = population.run(trigger="test")

    q = figures(report, UNSIGNED)
    assert (q["removed"], q["kept_assigned"], q["populated"]) == (4, 0, 4)
    with store_engine.connect() as conn:
        rows = conn.execute(text("SELECT id, status FROM unsigned_users_queue")).all()
    assert sorted(r.status for r in rows) == ["pending"] * 4
    assert not old_ids & {r.id for r in rows}


# -- atomic swap --------------------------------------------------------------------------------


def bulk_unsigned_leads(replica_engine: Engine, store_engine: Engine, count: int) -> None:
    """``count`` unsigned leads (user ids 1..count), built in SQL: row by row would take minutes."""
    with replica_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, is_enabled, current_signature_file_id, first_name,"
                " last_name, phone_number, email_address, status, created_at)"
                " SELECT g, true, NULL, 'Test', 'User' || g, '07700 900123',"
                " 'user' || g || '@example.invalid', 'active', timestamptz '2025-01-01'"
                " FROM generate_series(1, :n) g"
            ),
            {"n": count},
        )
        conn.execute(
            text(
                "INSERT INTO claims (id, user_id, status, created_at)"
                " SELECT 50000000 + g, g, 'open', timestamptz '2025-01-01'"
                " FROM generate_series(1, :n) g"
            ),
            {"n": count},
        )
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO user_call_scores (user_id, current_score, current_queue_type,"
                " created_at) SELECT g, g % 15, 'unsigned_users', now() - interval '1 day'"
                " FROM generate_series(1, :n) g"
            ),
            {"n": count},
        )


def test_refresh_is_atomic_for_an_observer_polling_the_queue(
    make_services: Callable[..., Services], replica_engine: Engine, store_engine: Engine
) -> None:
    bulk_unsigned_leads(replica_engine, store_engine, 20_000)
    population = make_services(queue_size_limit=50_000).population()
    first = population.run(trigger="test", queue=QueueType.UNSIGNED_USERS)
    assert figures(first, UNSIGNED)["populated"] == 20_000
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE user_call_scores SET is_active = false WHERE user_id <= 5000"))

    polls: list[tuple[float, float, int]] = []
    stop = threading.Event()

    def observe() -> None:
        with store_engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            while not stop.is_set():
                t0 = time.monotonic()
                n = conn.execute(
                    text("SELECT count(*) FROM unsigned_users_queue WHERE status = 'pending'")
                ).scalar_one()
                polls.append((t0, time.monotonic(), n))

    observer = threading.Thread(target=observe, daemon=True)
    observer.start()
    try:
        wait_for(lambda: len(polls) > 0)
        run_started = time.monotonic()
        second = population.run(trigger="test", queue=QueueType.UNSIGNED_USERS)
        run_finished = time.monotonic()
        polls_after = len(polls)
        wait_for(lambda: len(polls) > polls_after)
    finally:
        stop.set()
        observer.join(timeout=10)

    seen = {n for _, _, n in polls}
    assert seen <= {20_000, 15_000}, f"an observer saw a partial queue: {sorted(seen)}"
    q = figures(second, UNSIGNED)
    assert (q["status"], q["populated"], q["removed"]) == ("succeeded", 15_000, 20_000)
    during = [n for t0, t1, n in polls if t0 >= run_started and t1 <= run_finished]
    assert during, "no poll completed while the population ran"
    assert polls[-1][2] == 15_000


def hold_swap_lock(engine: Engine, swap_lock_id: int) -> Connection:
    """A transaction holding the queue's swap lock exclusively, as a swap in progress would."""
    conn = engine.connect()
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:key, :id)"), {"key": SWAP_LOCK_KEY, "id": swap_lock_id}
    )
    return conn


def waiting_for_swap_lock(engine: Engine, swap_lock_id: int) -> bool:
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    "                  WHERE datname = current_database())"
                    " AND classid = CAST(:key AS bigint) AND objid = :id AND objsubid = 2"
                ),
                {"key": SWAP_LOCK_KEY, "id": swap_lock_id},
            ).scalar_one()
        )


@pytest.mark.parametrize("handed_out", ["direct", "from_old_snapshot"])
def test_user_assigned_while_the_snapshot_is_built_is_left_out(
    handed_out: str,
    make_services: Callable[..., Services],
    replica: Replica,
    store_engine: Engine,
) -> None:
    unsigned_leads(replica, store_engine, [1, 2, 3])
    population = make_services().population()
    if handed_out == "from_old_snapshot":
        population.run(trigger="test", queue=QueueType.UNSIGNED_USERS)

    holder = hold_swap_lock(store_engine, 1)
    try:
        thread, outcome = run_in_thread(
            lambda: population.run(trigger="test", queue=QueueType.UNSIGNED_USERS)
        )
        # The walk is over and user 2 was kept; the swap now waits for our lock.
        wait_for(lambda: waiting_for_swap_lock(store_engine, 1))
        if handed_out == "direct":
            agent_id = new_agent(store_engine, "direct-agent")
            with store_engine.begin() as conn:
                conn.execute(
                    text(
                        "INSERT INTO assignments (agent_id, user_id, queue_type, source,"
                        " priority_score, status, lease_expires_at)"
                        " VALUES (:agent, 2, 'unsigned_users', 'direct', 0, 'active',"
                        " now() + interval '15 minutes')"
                    ),
                    {"agent": agent_id},
                )
        else:
            assign_entry(store_engine, UQ, UNSIGNED, 2)
    finally:
        holder.rollback()
        holder.close()
    thread.join(timeout=20)
    assert not thread.is_alive()
    assert "error" not in outcome, outcome.get("error")

    q = figures(outcome["result"], UNSIGNED)
    assert q["status"] == "succeeded"
    assert q["populated"] == 2
    with store_engine.connect() as conn:
        live = conn.execute(
            text(
                "SELECT user_id, status FROM unsigned_users_queue"
                " WHERE status IN ('pending', 'assigned') ORDER BY user_id"
            )
        ).all()
    if handed_out == "direct":
        assert [tuple(r) for r in live] == [(1, "pending"), (3, "pending")]
    else:
        assert q["kept_assigned"] == 1
        assert [tuple(r) for r in live] == [(1, "pending"), (2, "assigned"), (3, "pending")]


# -- single flight ------------------------------------------------------------------------------


def test_a_population_already_running_is_refused_at_once(
    make_client: Callable[..., Any],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    unsigned_leads(replica, store_engine, [1])
    client = make_client()
    with store_engine.begin() as conn:  # the live run's history row, as the other process left it
        live_run = conn.execute(
            text("INSERT INTO population_runs (trigger) VALUES ('other-process') RETURNING id")
        ).scalar_one()

    holder = store_engine.connect()
    try:
        holder.execute(text("SELECT pg_advisory_lock(:key)"), {"key": POPULATION_LOCK_KEY})
        holder.commit()
        t0 = time.monotonic()
        refused = client.get(CRON_PATH, headers=cron_headers)
        elapsed = time.monotonic() - t0
        refused_dry = client.get(f"{CRON_PATH}?dry_run=true", headers=cron_headers)
        with store_engine.connect() as conn:
            runs = conn.execute(text("SELECT id, status FROM population_runs")).all()
    finally:
        holder.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": POPULATION_LOCK_KEY})
        holder.commit()
        holder.close()

    assert refused.status_code == 409
    assert elapsed < 2
    body = refused.json()
    assert set(body) == {"error", "detail"}
    assert body["error"] == "PopulationRunning"
    assert isinstance(body["detail"], str) and body["detail"]
    assert refused_dry.status_code == 409  # a dry run takes the lock too
    # Refused before touching the run history: the live run is not declared interrupted.
    assert [tuple(r) for r in runs] == [(live_run, "running")]

    accepted = client.get(CRON_PATH, headers=cron_headers)
    assert accepted.status_code == 200
    assert accepted.json()["queues"][UNSIGNED]["populated"] == 1


# -- a queue that fails leaves its snapshot alone ------------------------------------------------


def two_queue_book(replica: Replica, store: Engine) -> None:
    replica.unsigned(1)
    replica.unsigned(2)
    replica.outstanding(11)
    replica.outstanding(12)
    add_scores(
        store,
        [
            {"user_id": 1, "current_queue_type": UNSIGNED},
            {"user_id": 2, "current_queue_type": UNSIGNED},
            {"user_id": 11, "current_queue_type": OUTSTANDING},
            {"user_id": 12, "current_queue_type": OUTSTANDING},
        ],
    )


def snapshot_ids(engine: Engine, table: str) -> set[uuid.UUID]:
    with engine.connect() as conn:
        return set(conn.execute(text(f"SELECT id FROM {table}")).scalars())


def assert_failed_outstanding_left_alone(
    response: Any, store_engine: Engine, old_outstanding: set[uuid.UUID], old_unsigned: set[Any]
) -> dict[str, Any]:
    assert response.status_code == 500
    body = response.json()
    assert body["success"] is False
    outstanding = body["queues"][OUTSTANDING]
    unsigned = body["queues"][UNSIGNED]
    assert outstanding["status"] == "failed"
    assert unsigned["status"] == "succeeded"
    assert unsigned["error"] is None
    assert (unsigned["populated"], unsigned["removed"]) == (3, 2)
    assert snapshot_ids(store_engine, OQ) == old_outstanding
    new_unsigned = snapshot_ids(store_engine, UQ)
    assert len(new_unsigned) == 3
    assert not new_unsigned & old_unsigned
    with store_engine.connect() as conn:
        run = conn.execute(
            text("SELECT status, error FROM population_runs WHERE id = :id"),
            {"id": body["run_id"]},
        ).one()
        recorded = dict(
            conn.execute(
                text("SELECT queue_type, status FROM population_run_queues WHERE run_id = :id"),
                {"id": body["run_id"]},
            ).all()
        )
    assert run.status == "failed"
    assert OUTSTANDING in run.error
    assert recorded == {UNSIGNED: "succeeded", OUTSTANDING: "failed"}
    return body


def test_a_database_fault_in_one_queue_keeps_its_old_snapshot(
    make_client: Callable[..., Any],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
    fault_trigger: Callable[[str], None],
) -> None:
    two_queue_book(replica, store_engine)
    client = make_client()
    assert client.get(CRON_PATH, headers=cron_headers).status_code == 200
    old_outstanding = snapshot_ids(store_engine, OQ)
    old_unsigned = snapshot_ids(store_engine, UQ)
    assert len(old_outstanding) == 2
    unsigned_leads(replica, store_engine, [3])  # the unsigned queue's next snapshot differs
    fault_trigger(OQ)

    response = client.get(CRON_PATH, headers=cron_headers)

    body = assert_failed_outstanding_left_alone(
        response, store_engine, old_outstanding, old_unsigned
    )
    # The cause by class and SQLSTATE, never the database's message (it can quote row values).
    assert body["queues"][OUTSTANDING]["error"] == "database error (RaiseException, sqlstate P0001)"


def test_an_unreachable_replica_fails_both_queues_and_changes_nothing(
    make_client: Callable[..., Any],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
) -> None:
    two_queue_book(replica, store_engine)
    assert make_client().get(CRON_PATH, headers=cron_headers).status_code == 200
    with store_engine.connect() as conn:
        scores_before = conn.execute(text("SELECT * FROM user_call_scores ORDER BY user_id")).all()
    old = {t: snapshot_ids(store_engine, t) for t in (UQ, OQ)}
    client = make_client(replica_database_url="postgresql://postgres@127.0.0.1:1/nowhere")

    response = client.get(CRON_PATH, headers=cron_headers)

    assert response.status_code == 500
    body = response.json()
    assert body["success"] is False
    for queue_type in (UNSIGNED, OUTSTANDING):
        assert body["queues"][queue_type]["status"] == "failed"
        assert "replica" in body["queues"][queue_type]["error"]
        assert "nowhere" not in body["queues"][queue_type]["error"]
    assert {t: snapshot_ids(store_engine, t) for t in old} == old
    with store_engine.connect() as conn:
        assert (
            conn.execute(text("SELECT * FROM user_call_scores ORDER BY user_id")).all()
            == scores_before
        )


@pytest.fixture
def limited_role_url(pg_server: str, store_url: str) -> Iterator[str]:
    """A login role with the rights the service needs on the store, except INSERT on one queue."""
    role = f"cq_limited_{os.getpid()}"
    admin = create_engine(store_url, isolation_level="AUTOCOMMIT")
    database = make_url(store_url).database
    with admin.connect() as conn:
        exists = conn.execute(
            text("SELECT count(*) FROM pg_roles WHERE rolname = :r"), {"r": role}
        ).scalar_one()
        if not exists:
            conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        conn.execute(text(f'GRANT CONNECT, TEMPORARY ON DATABASE "{database}" TO {role}'))
        conn.execute(text(f"GRANT USAGE ON SCHEMA public TO {role}"))
        conn.execute(
            text(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        )
        conn.execute(text(f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}"))
        conn.execute(text(f"REVOKE INSERT ON outstanding_requests_queue FROM {role}"))
    try:
        yield make_url(store_url).set(username=role, password=None).render_as_string(False)
    finally:
        with admin.connect() as conn:
            conn.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"
                    " AND datname = current_database()"
                ),
                {"r": role},
            )
            conn.execute(text(f"DROP OWNED BY {role}"))  # revokes every grant in this database
            conn.execute(text(f'REVOKE ALL ON DATABASE "{database}" FROM {role}'))
            # Fails only if a crashed earlier session left grants in another database.
            with contextlib.suppress(DBAPIError):
                conn.execute(text(f"DROP ROLE IF EXISTS {role}"))
        admin.dispose()


def test_a_revoked_privilege_fails_only_that_queue(
    make_client: Callable[..., Any],
    cron_headers: dict[str, str],
    replica: Replica,
    store_engine: Engine,
    limited_role_url: str,
) -> None:
    two_queue_book(replica, store_engine)
    admin_client = make_client()
    assert admin_client.get(CRON_PATH, headers=cron_headers).status_code == 200
    old_outstanding = snapshot_ids(store_engine, OQ)
    old_unsigned = snapshot_ids(store_engine, UQ)
    unsigned_leads(replica, store_engine, [3])

    limited = make_client(database_url=limited_role_url)
    response = limited.get(CRON_PATH, headers=cron_headers)

    body = assert_failed_outstanding_left_alone(
        response, store_engine, old_outstanding, old_unsigned
    )
    assert body["queues"][OUTSTANDING]["error"].startswith(
        "database error (InsufficientPrivilege, sqlstate 42501"
    )


# -- run history --------------------------------------------------------------------------------


def test_a_stale_running_row_is_marked_interrupted_by_the_next_run(
    make_services: Callable[..., Services], replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, [1])
    with store_engine.begin() as conn:
        stale = conn.execute(
            text(
                "INSERT INTO population_runs (trigger, started_at)"
                " VALUES ('cron', now() - interval '3 hours') RETURNING id"
            )
        ).scalar_one()

    report = make_services().population().run(trigger="test")

    with store_engine.connect() as conn:
        rows = {
            r.id: r
            for r in conn.execute(
                text("SELECT id, status, finished_at, error FROM population_runs")
            )
        }
    assert rows[stale].status == "failed"
    assert rows[stale].finished_at is not None
    assert rows[stale].error.startswith("interrupted")
    assert rows[report.run_id].status == "succeeded"
    assert rows[report.run_id].error is None
