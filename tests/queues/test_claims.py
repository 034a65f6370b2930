"""Claiming the next valid user (SPEC 3.3, 3.5, 4.2), observed from outside the service.

Real PostgreSQL, real connections in parallel, no mocks. Where a race must happen for the test to
mean anything, the test forces it instead of hoping for it: claims are held at the queue's swap
lock (which every claim attempt takes shared) until all of them are waiting, then let go together.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, insert, text
from sqlalchemy.exc import IntegrityError

from app.auth.identity import AgentIdentity, authenticate_token
from app.auth.people import create_agent
from app.config import MigrationMode
from app.errors import Conflict, ReplicaUnavailable
from app.flags import Flags, update_flags
from app.queues.claims import Claimed, ValidationAttemptsExhausted
from app.queues.kinds import SWAP_LOCK_KEY
from app.replica.schema import claim_requirements, claims, users
from app.rules.outcomes import Outcome
from app.services import Services
from app.vocabulary import QueueType
from tests.factories import LONG_AGO, OWN_PHONE, add_scores, lapse, next_id, own_phone

UNSIGNED = QueueType.UNSIGNED_USERS
OUTSTANDING = QueueType.OUTSTANDING_REQUESTS
UQ = "unsigned_users_queue"
OQ = "outstanding_requests_queue"
CLOSED_REPLICA = "postgresql://postgres@127.0.0.1:1/x"
NEXT = "/api/queues/{}/next-user"


# -- helpers ------------------------------------------------------------------------------------


def seed(
    replica_engine: Engine,
    store_engine: Engine,
    user_ids: Iterable[int],
    queue: QueueType = UNSIGNED,
    *,
    score: int | Callable[[int], int] = 0,
    phone: str | None = OWN_PHONE,
) -> list[int]:
    """Replica users who belong in ``queue`` plus their score rows, written in bulk."""
    ids = list(user_ids)
    signed = queue is OUTSTANDING
    user_rows, claim_rows, req_rows, score_rows = [], [], [], []
    for uid in ids:
        user_rows.append(
            {
                "id": uid,
                "is_enabled": True,
                "current_signature_file_id": 7 if signed else None,
                "first_name": "Test",
                "last_name": f"User{uid}",
                "phone_number": own_phone(uid) if phone == OWN_PHONE else phone,
                "email_address": f"user{uid}@example.invalid",
                "status": "active",
                "created_at": LONG_AGO,
            }
        )
        cid = next_id()
        claim_rows.append({"id": cid, "user_id": uid, "status": "open", "created_at": LONG_AGO})
        if signed:
            req_rows.append(
                {
                    "id": next_id(),
                    "claim_id": cid,
                    "type": "proof_of_address",
                    "status": "pending",
                    "claim_requirement_reason": None,
                    "created_at": LONG_AGO,
                }
            )
        score_rows.append(
            {
                "user_id": uid,
                "current_queue_type": str(queue),
                "current_score": score(uid) if callable(score) else score,
            }
        )
    with replica_engine.begin() as conn:
        conn.execute(insert(users), user_rows)
        conn.execute(insert(claims), claim_rows)
        if req_rows:
            conn.execute(insert(claim_requirements), req_rows)
    add_scores(store_engine, score_rows)
    return ids


def populate(services: Services, expected: int, queue: QueueType = UNSIGNED) -> None:
    report = services.population().run(trigger="test", queue=queue)
    figures = report.queues[queue]
    assert figures.status == "succeeded", figures.error
    assert figures.populated == expected


def make_agents(
    engine: Engine, count: int, prefix: str = "agent", role: str = "agent"
) -> list[AgentIdentity]:
    with engine.begin() as conn:
        return [
            authenticate_token(conn, create_agent(conn, f"{prefix}-{i}", role)).agent
            for i in range(count)
        ]


def agent_token(engine: Engine, name: str, role: str = "agent") -> dict[str, str]:
    with engine.begin() as conn:
        return {"Authorization": f"Bearer {create_agent(conn, name, role)}"}


def flags(**changes: Any) -> Flags:
    values: dict[str, Any] = {
        "USE_SEPARATED_QUEUES": True,
        "USE_NEW_QUEUE_SERVICES": True,
        "MIGRATION_MODE": MigrationMode.NEW_ONLY,
        "ENABLE_QUEUE_VALIDATION": True,
    }
    values.update(changes)
    return Flags(**values)


def entries(engine: Engine, table: str = UQ) -> dict[int, dict[str, Any]]:
    """The queue table's rows by user id (one row per user in these tests)."""
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                f"SELECT id, user_id, status, invalid_reason, assigned_to_agent, assigned_at,"
                f" queue_position, updated_at FROM {table} ORDER BY user_id"
            )
        ).mappings()
        return {row["user_id"]: dict(row) for row in rows}


def ledger(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [
            dict(r)
            for r in conn.execute(
                text("SELECT * FROM assignments ORDER BY assigned_at, id")
            ).mappings()
        ]


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def replica_exec(replica_engine: Engine, sql: str, **params: Any) -> None:
    with replica_engine.begin() as conn:
        conn.execute(text(sql), params)


def store_exec(store_engine: Engine, sql: str, **params: Any) -> None:
    with store_engine.begin() as conn:
        conn.execute(text(sql), params)


def sign_with_pending_requirement(replica_engine: Engine, user_id: int) -> None:
    """The user signs after the population and now owes a document: outstanding_requests."""
    with replica_engine.begin() as conn:
        conn.execute(
            text("UPDATE users SET current_signature_file_id = 99 WHERE id = :u"), {"u": user_id}
        )
        claim_id = conn.execute(
            text("SELECT id FROM claims WHERE user_id = :u"), {"u": user_id}
        ).scalar_one()
        conn.execute(
            insert(claim_requirements),
            {
                "id": next_id(),
                "claim_id": claim_id,
                "type": "proof_of_address",
                "status": "pending",
                "claim_requirement_reason": None,
                "created_at": LONG_AGO,
            },
        )


def waiting_on_swap_lock(conn: Connection, queue: QueueType = UNSIGNED) -> int:
    """How many sessions of this database wait for the queue's swap lock."""
    swap_id = 1 if queue is UNSIGNED else 2
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
                " AND classid = CAST(:key AS oid) AND objid = CAST(:id AS oid) AND objsubid = 2"
            ),
            {"key": SWAP_LOCK_KEY, "id": swap_id},
        ).scalar_one()
    )


def wait_for_waiters(engine: Engine, count: int, timeout: float = 4.0) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while waiting_on_swap_lock(conn) < count:
            assert time.monotonic() < deadline, f"fewer than {count} claims reached the swap lock"
            time.sleep(0.02)
            conn.rollback()


class Hold:
    """Hold the unsigned queue's swap lock exclusively, as a population swap does."""

    def __init__(self, engine: Engine) -> None:
        self.conn = engine.connect()
        self.tx = self.conn.begin()
        self.conn.execute(text("SELECT pg_advisory_xact_lock(:key, 1)"), {"key": SWAP_LOCK_KEY})

    def replace_pending(self) -> set[Any]:
        """What the swap itself does, not yet committed: the pending entries deleted and
        inserted again as new rows. Returns the new entries' ids."""
        columns = (
            "user_id, claim_id, priority_score, queue_position, status, queue_reason,"
            " available_from, signature_missing_since, signature_type"
        )
        rows = self.conn.execute(text(f"SELECT {columns} FROM {UQ}")).mappings().all()
        self.conn.execute(text(f"DELETE FROM {UQ} WHERE status <> 'assigned'"))
        insert = text(
            f"INSERT INTO {UQ} ({columns}) VALUES (:user_id, :claim_id, :priority_score,"
            " :queue_position, :status, :queue_reason, :available_from,"
            " :signature_missing_since, :signature_type) RETURNING id"
        )
        return {self.conn.execute(insert, dict(row)).scalar_one() for row in rows}

    def release(self) -> None:
        self.tx.commit()
        self.conn.close()


class ScoreRowsHold:
    """Hold every score row FOR UPDATE, as outcomes being recorded would: a hand-out then waits
    at its score row's lock, after its ledger insert."""

    def __init__(self, engine: Engine) -> None:
        self.conn = engine.connect()
        self.tx = self.conn.begin()
        self.conn.execute(text("SELECT 1 FROM user_call_scores ORDER BY user_id FOR UPDATE"))

    def release(self) -> None:
        self.tx.commit()
        self.conn.close()


def wait_for_lock_waiters(engine: Engine, count: int, timeout: float = 4.0) -> None:
    """Until ``count`` sessions of this database wait for a lock (a row, a transaction)."""
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:
        while True:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
            conn.rollback()
            if waiting >= count:
                return
            assert time.monotonic() < deadline, f"fewer than {count} sessions wait for a lock"
            time.sleep(0.02)


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


@dataclass
class Tracker:
    """What the agents saw, and the proof that nobody was told "empty" too early.

    A claim answering None is only acceptable when every user is either already handed out or
    possibly locked by another claim in flight (SKIP LOCKED passes over entries other agents
    are taking); anything less means an agent saw an empty queue while valid entries remained.
    """

    total: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    handed: int = 0
    in_flight: int = 0
    claims: list[tuple[int, Any, int, Any, str]] = field(default_factory=list)
    early_empty: list[tuple[int, int]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    exhausted: int = 0

    def begin(self) -> None:
        with self.lock:
            self.in_flight += 1

    def end(self, agent: AgentIdentity, got: Claimed | None) -> None:
        with self.lock:
            self.in_flight -= 1
            if got is None:
                if self.handed + self.in_flight < self.total:
                    self.early_empty.append((self.handed, self.in_flight))
                return
            self.handed += 1
            row = got.assignment
            self.claims.append((agent.id, row.id, row.user_id, row.queue_entry_id, row.source))

    def abort(self, exc: BaseException) -> None:
        with self.lock:
            self.in_flight -= 1
            self.errors.append(exc)


def agent_loop(
    services: Services,
    agent: AgentIdentity,
    queue: QueueType,
    served: Flags,
    tracker: Tracker,
    barrier: threading.Barrier,
    *,
    retry_exhausted: bool = False,
    call_seconds: float = 0.0,
) -> None:
    """One dashboard: next user, a call of ``call_seconds``, complete with no_answer, again,
    until the queue is empty."""
    barrier.wait(timeout=30)
    while True:
        tracker.begin()
        try:
            got = services.claims.next_user(agent, queue, served)
        except ValidationAttemptsExhausted as exc:
            if not retry_exhausted:
                tracker.abort(exc)
                return
            with tracker.lock:
                tracker.in_flight -= 1
                tracker.exhausted += 1
            continue  # a 503 with Retry-After: a dashboard asks again
        except BaseException as exc:
            tracker.abort(exc)
            return
        tracker.end(agent, got)
        if got is None:
            return
        time.sleep(call_seconds)
        try:
            services.assignments.complete(agent, got.assignment.id, Outcome.NO_ANSWER, None, None)
        except BaseException as exc:
            with tracker.lock:
                tracker.errors.append(exc)
            return


def run_agents(
    services: Services,
    agents: list[AgentIdentity],
    queue: QueueType,
    served: Flags,
    tracker: Tracker,
    *,
    extra: tuple[Callable[[threading.Barrier], None], ...] = (),
    retry_exhausted: bool = False,
    call_seconds: float = 0.0,
    after_agents: Callable[[], None] | None = None,
    timeout: float = 120,
) -> None:
    barrier = threading.Barrier(len(agents) + len(extra))
    workers = [
        threading.Thread(
            target=agent_loop,
            args=(services, agent, queue, served, tracker, barrier),
            kwargs={"retry_exhausted": retry_exhausted, "call_seconds": call_seconds},
            daemon=True,
        )
        for agent in agents
    ]
    helpers = [threading.Thread(target=fn, args=(barrier,), daemon=True) for fn in extra]
    for thread in workers + helpers:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in workers:
        thread.join(max(0.1, deadline - time.monotonic()))
    if after_agents is not None:
        after_agents()
    for thread in helpers:
        thread.join(max(0.1, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in workers + helpers), "agents did not finish in time"


def assert_no_overlap_per_agent(rows: list[dict[str, Any]]) -> None:
    """In the ledger (database time), no agent's assignments overlap: never two at once."""
    by_agent: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        by_agent.setdefault(row["agent_id"], []).append(row)
    for agent_rows in by_agent.values():
        agent_rows.sort(key=lambda r: r["assigned_at"])
        for before, after in itertools.pairwise(agent_rows):
            assert before["finished_at"] is not None
            assert before["finished_at"] <= after["assigned_at"]


# -- 1. 64 agents at once -----------------------------------------------------------------------

# 64 agent threads hold at most one store connection each; the pool is capped below 64 so the
# whole test stays well under PostgreSQL's 100 connections (replica pool: 15 more).
# 40 store connections for 64 agent threads: real contention, and room under max_connections.
POOL = {"db_pool_size": 32, "db_max_overflow": 8}


def test_64_agents_drain_the_queue_each_entry_exactly_once(
    make_services, store_engine, replica_engine
):
    size = 300
    svc = make_services(queue_size_limit=1000, **POOL)
    seed(replica_engine, store_engine, range(1, size + 1), score=lambda uid: uid % 7)
    populate(svc, size)
    agents = make_agents(store_engine, 64)
    tracker = Tracker(total=size)

    run_agents(svc, agents, UNSIGNED, svc.flags(), tracker)

    assert not any(isinstance(e, IntegrityError) for e in tracker.errors)
    assert tracker.errors == []
    assert tracker.early_empty == []
    assert tracker.handed == size
    rows = ledger(store_engine)
    assert len(rows) == size
    assert len({r["queue_entry_id"] for r in rows}) == size
    assert len({r["user_id"] for r in rows}) == size
    assert {r["status"] for r in rows} == {"completed"}
    assert {r["source"] for r in rows} == {"queue"}
    # The agents' own view agrees with the ledger.
    assert sorted(c[1] for c in tracker.claims) == sorted(r["id"] for r in rows)
    # Many agents really took part (64 threads released by one barrier).
    assert len({r["agent_id"] for r in rows}) > 32
    assert_no_overlap_per_agent(rows)
    queue = entries(store_engine)
    assert len(queue) == size
    assert {e["status"] for e in queue.values()} == {"completed"}
    assert {r["queue_entry_id"] for r in rows} == {e["id"] for e in queue.values()}


# -- 2. the same with refreshes running beside them ---------------------------------------------


def test_64_agents_with_refresh_loop_no_duplicates_and_no_early_empty(
    make_services, store_engine, replica_engine
):
    size = 300
    svc = make_services(queue_size_limit=1000, **POOL)
    seed(replica_engine, store_engine, range(1, size + 1))
    populate(svc, size)
    agents = make_agents(store_engine, 64)
    tracker = Tracker(total=size)
    stop = threading.Event()
    runs: list[Any] = []
    refresh_errors: list[BaseException] = []

    def refresher(barrier: threading.Barrier) -> None:
        barrier.wait(timeout=30)
        while not stop.is_set():
            try:
                runs.append(svc.population().run(trigger="test", queue=UNSIGNED))
            except BaseException as exc:
                refresh_errors.append(exc)
                return

    run_agents(
        svc,
        agents,
        UNSIGNED,
        svc.flags(),
        tracker,
        extra=(refresher,),
        retry_exhausted=True,
        # Calls long enough that the agents are still working while refreshes swap.
        call_seconds=0.05,
        after_agents=stop.set,
    )

    assert tracker.errors == []
    assert refresh_errors == []
    assert [r.queues[UNSIGNED].status for r in runs] == ["succeeded"] * len(runs)
    swaps_during_claims = [r for r in runs[:-1] if r.queues[UNSIGNED].populated > 0]
    assert len(swaps_during_claims) >= 1, "no refresh swapped while the agents were working"
    assert tracker.early_empty == [], "an agent was told the queue was empty too early"
    rows = ledger(store_engine)
    assert len(rows) == size
    assert len({r["user_id"] for r in rows}) == size
    assert {r["user_id"] for r in rows} == set(range(1, size + 1))
    assert len({r["queue_entry_id"] for r in rows}) == size
    assert {r["status"] for r in rows} == {"completed"}
    assert_no_overlap_per_agent(rows)
    live = scalar(store_engine, f"SELECT count(*) FROM {UQ} WHERE status IN ('pending','assigned')")
    assert live == 0


# -- 3. signed after the population -------------------------------------------------------------


def test_user_who_signed_after_population_is_skipped_reclassified_and_audited(
    services, store_engine, replica_engine
):
    seed(replica_engine, store_engine, [1], score=0)  # A, served first
    seed(replica_engine, store_engine, [2], score=3)  # B
    populate(services, 2)
    sign_with_pending_requirement(replica_engine, 1)
    (agent,) = make_agents(store_engine, 1)

    got = services.claims.next_user(agent, UNSIGNED, flags())

    assert got is not None and got.assignment.user_id == 2
    assert got.resumed is False
    queue = entries(store_engine)
    assert queue[1]["status"] == "invalid"
    assert queue[1]["invalid_reason"] == "reclassified: pending_requirements"
    assert queue[1]["assigned_to_agent"] is None
    assert queue[2]["status"] == "assigned"
    assert (
        scalar(store_engine, "SELECT current_queue_type FROM user_call_scores WHERE user_id = 1")
        == "outstanding_requests"
    )
    with store_engine.connect() as conn:
        audit = conn.execute(
            text(
                "SELECT user_id, from_queue_type, to_queue_type, reason, source, agent_id, run_id"
                " FROM queue_transitions"
            )
        ).all()
    assert [tuple(a) for a in audit] == [
        (
            1,
            "unsigned_users",
            "outstanding_requests",
            "pending_requirements",
            "claim",
            agent.id,
            None,
        )
    ]
    assert [r["user_id"] for r in ledger(store_engine)] == [2]


# -- 4. deleted or disabled users do not block the queue ----------------------------------------


def test_deleted_and_disabled_users_do_not_block_the_entries_behind(
    services, store_engine, replica_engine
):
    seed(replica_engine, store_engine, [1, 2, 3, 4])
    populate(services, 4)
    replica_exec(replica_engine, "DELETE FROM claims WHERE user_id = 1")
    replica_exec(replica_engine, "DELETE FROM users WHERE id = 1")
    replica_exec(replica_engine, "UPDATE users SET is_enabled = false WHERE id = 2")
    agents = make_agents(store_engine, 2)

    first = services.claims.next_user(agents[0], UNSIGNED, flags())
    second = services.claims.next_user(agents[1], UNSIGNED, flags())

    assert first is not None and first.assignment.user_id == 3
    assert second is not None and second.assignment.user_id == 4
    queue = entries(store_engine)
    assert (queue[1]["status"], queue[1]["invalid_reason"]) == (
        "invalid",
        "reclassified: not_in_replica",
    )
    assert (queue[2]["status"], queue[2]["invalid_reason"]) == (
        "invalid",
        "reclassified: user_disabled",
    )
    with store_engine.connect() as conn:
        types = dict(
            conn.execute(
                text("SELECT user_id, current_queue_type FROM user_call_scores ORDER BY user_id")
            ).all()
        )
    assert types == {1: None, 2: None, 3: "unsigned_users", 4: "unsigned_users"}


# -- 5. replica unreachable ---------------------------------------------------------------------


@pytest.mark.parametrize("validation", [True, False], ids=["validation-on", "validation-off"])
def test_replica_unreachable_answers_503_and_changes_nothing(
    services, make_client, store_engine, replica_engine, validation
):
    seed(replica_engine, store_engine, [1, 2, 3])
    populate(services, 3)
    headers = agent_token(store_engine, "alice")
    if not validation:
        with store_engine.begin() as conn:
            update_flags(conn, services.settings, {"ENABLE_QUEUE_VALIDATION": False}, None)
    client = make_client(replica_database_url=CLOSED_REPLICA, replica_statement_timeout_ms=200)
    before = entries(store_engine)
    scores_before = scalar(
        store_engine,
        "SELECT string_agg(user_call_scores::text, '|' ORDER BY user_id) FROM user_call_scores",
    )

    response = client.post(NEXT.format("unsigned_users"), headers=headers)

    assert response.status_code == 503, response.text
    assert response.json()["error"] == "ReplicaUnavailable"
    assert entries(store_engine) == before
    assert {e["status"] for e in before.values()} == {"pending"}
    assert scalar(store_engine, "SELECT count(*) FROM assignments") == 0
    assert scalar(store_engine, "SELECT count(*) FROM queue_transitions") == 0
    assert (
        scalar(
            store_engine,
            "SELECT string_agg(user_call_scores::text, '|' ORDER BY user_id) FROM user_call_scores",
        )
        == scores_before
    )


def test_replica_unreachable_service_level_raises(make_services, store_engine, replica_engine):
    good = make_services()
    seed(replica_engine, store_engine, [1])
    populate(good, 1)
    bad = make_services(replica_database_url=CLOSED_REPLICA, replica_statement_timeout_ms=200)
    (agent,) = make_agents(store_engine, 1)
    with pytest.raises(ReplicaUnavailable):
        bad.claims.next_user(agent, UNSIGNED, flags())
    assert entries(store_engine)[1]["status"] == "pending"
    # The same claim succeeds once the replica answers again.
    got = good.claims.next_user(agent, UNSIGNED, flags())
    assert got is not None and got.assignment.user_id == 1


# -- 6. double click ----------------------------------------------------------------------------


def test_double_click_yields_one_assignment_returned_to_both(
    client, services, store_engine, replica_engine
):
    seed(replica_engine, store_engine, [1, 2, 3])
    populate(services, 3)
    headers = agent_token(store_engine, "alice")
    barrier = threading.Barrier(2)

    def click() -> Any:
        barrier.wait(timeout=10)
        return client.post(NEXT.format("unsigned_users"), headers=headers)

    # Both requests pass the "does this agent hold one already?" check: the first waits at its
    # score row's lock after its ledger insert, the second at that insert's uncommitted index
    # entry. Only the database's per-agent index can stop a second assignment.
    hold = ScoreRowsHold(store_engine)
    try:
        threads = [in_thread(click) for _ in range(2)]
        wait_for_lock_waiters(store_engine, 2)
    finally:
        hold.release()
    for thread, _ in threads:
        thread.join(20)
    results = [out.get("result") for _, out in threads]
    assert [out.get("error") for _, out in threads] == [None, None]
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
    bodies = [r.json() for r in results]
    assert bodies[0]["assignment_id"] == bodies[1]["assignment_id"]
    assert sorted(b["resumed"] for b in bodies) == [False, True]
    # Each request may have locked a different entry (SKIP LOCKED); the loser's is rolled back.
    winner = bodies[0]["user_id"]
    assert bodies[1]["user_id"] == winner and winner in (1, 2)
    assert bodies[0]["user"] == bodies[1]["user"]
    assert scalar(store_engine, "SELECT count(*) FROM assignments") == 1
    queue = entries(store_engine)
    assert sorted(queue[u]["status"] for u in (1, 2, 3)) == ["assigned", "pending", "pending"]
    assert queue[winner]["status"] == "assigned"


def test_double_click_service_level_with_barrier(services, store_engine, replica_engine):
    seed(replica_engine, store_engine, [1, 2, 3])
    populate(services, 3)
    (agent,) = make_agents(store_engine, 1)
    barrier = threading.Barrier(2)

    def click() -> Claimed | None:
        barrier.wait(timeout=10)
        return services.claims.next_user(agent, UNSIGNED, flags())

    hold = ScoreRowsHold(store_engine)
    try:
        threads = [in_thread(click) for _ in range(2)]
        wait_for_lock_waiters(store_engine, 2)
    finally:
        hold.release()
    for thread, _ in threads:
        thread.join(20)
    outs = [out for _, out in threads]
    assert [o.get("error") for o in outs] == [None, None]
    got = [o["result"] for o in outs]
    assert got[0].assignment.id == got[1].assignment.id
    assert sorted(g.resumed for g in got) == [False, True]
    assert scalar(store_engine, "SELECT count(*) FROM assignments") == 1


# -- 7. resumed, and 409 across queues ----------------------------------------------------------


def test_asking_again_resumes_and_the_other_queue_conflicts(
    client, services, store_engine, replica_engine
):
    seed(replica_engine, store_engine, [1, 2])
    seed(replica_engine, store_engine, [10], OUTSTANDING)
    populate(services, 2)
    populate(services, 1, OUTSTANDING)
    (agent,) = make_agents(store_engine, 1)

    first = services.claims.next_user(agent, UNSIGNED, flags())
    again = services.claims.next_user(agent, UNSIGNED, flags())
    assert first is not None and again is not None
    assert (first.resumed, again.resumed) == (False, True)
    assert again.assignment.id == first.assignment.id
    assert again.contact == first.contact
    with pytest.raises(Conflict):
        services.claims.next_user(agent, OUTSTANDING, flags())
    assert scalar(store_engine, "SELECT count(*) FROM assignments") == 1
    assert entries(store_engine, OQ)[10]["status"] == "pending"

    headers = agent_token(store_engine, "bob")
    mine = client.post(NEXT.format("outstanding_requests"), headers=headers)
    assert mine.status_code == 200 and mine.json()["user_id"] == 10
    conflict = client.post(NEXT.format("unsigned_users"), headers=headers)
    assert conflict.status_code == 409
    assert conflict.json()["error"] == "Conflict"
    resumed = client.post(NEXT.format("outstanding_requests"), headers=headers)
    assert resumed.json()["assignment_id"] == mine.json()["assignment_id"]
    assert resumed.json()["resumed"] is True
    assert entries(store_engine)[2]["status"] == "pending"


# -- 8. no phone number -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "served",
    [
        flags(),
        flags(ENABLE_QUEUE_VALIDATION=False),
        flags(MIGRATION_MODE=MigrationMode.DUAL),
        flags(MIGRATION_MODE=MigrationMode.DUAL, ENABLE_QUEUE_VALIDATION=False),
    ],
    ids=["new-only", "new-only-no-validation", "dual", "dual-no-validation"],
)
def test_user_without_phone_is_invalid_in_every_mode(
    services, store_engine, replica_engine, served
):
    # Scores fix the serving order: the three uncallable users come first.
    seed(replica_engine, store_engine, [1], phone=None, score=1)
    seed(replica_engine, store_engine, [2], phone="", score=2)
    seed(replica_engine, store_engine, [3], phone="   ", score=3)
    seed(replica_engine, store_engine, [4], score=4)
    populate(services, 4)
    (agent,) = make_agents(store_engine, 1)

    got = services.claims.next_user(agent, UNSIGNED, served)

    assert got is not None and got.assignment.user_id == 4
    assert got.assignment.source == "queue"
    queue = entries(store_engine)
    for uid in (1, 2, 3):
        assert (queue[uid]["status"], queue[uid]["invalid_reason"]) == (
            "invalid",
            "no_phone_number",
        )
    assert [r["user_id"] for r in ledger(store_engine)] == [4]


@pytest.mark.parametrize("validation", [True, False], ids=["validation-on", "validation-off"])
def test_user_without_phone_is_never_handed_out_in_direct_mode(
    services, store_engine, replica_engine, validation
):
    # Scores fix the serving order: the three uncallable users come first.
    seed(replica_engine, store_engine, [1], phone=None, score=1)
    seed(replica_engine, store_engine, [2], phone="", score=2)
    seed(replica_engine, store_engine, [3], phone="   ", score=3)
    seed(replica_engine, store_engine, [4], score=4)
    (agent,) = make_agents(store_engine, 1)
    served = flags(MIGRATION_MODE=MigrationMode.LEGACY_ONLY, ENABLE_QUEUE_VALIDATION=validation)

    got = services.claims.next_user(agent, UNSIGNED, served)

    assert got is not None and got.assignment.user_id == 4
    assert got.assignment.source == "direct"
    # Held back, so the next direct claim does not meet them again.
    held = scalar(
        store_engine,
        "SELECT count(*) FROM user_call_scores WHERE user_id IN (1, 2, 3)"
        " AND next_call_after >= now() + interval '59 minutes'",
    )
    assert held == 3
    services.assignments.complete(agent, got.assignment.id, Outcome.NO_ANSWER, None, None)
    assert services.claims.next_user(agent, UNSIGNED, served) is None


# -- 9. validation attempts exhausted -----------------------------------------------------------


def test_validation_attempts_exhausted_is_503_with_retry_after(
    make_services, make_client, store_engine, replica_engine
):
    svc = make_services(max_validation_attempts=2)
    client = make_client(max_validation_attempts=2)
    seed(replica_engine, store_engine, [1, 2, 3, 4])
    populate(svc, 4)
    replica_exec(replica_engine, "UPDATE users SET is_enabled = false WHERE id = 1")
    store_exec(store_engine, "UPDATE user_call_scores SET is_active = false WHERE user_id = 2")
    replica_exec(replica_engine, "UPDATE users SET phone_number = NULL WHERE id = 3")
    headers = agent_token(store_engine, "alice")

    busy = client.post(NEXT.format("unsigned_users"), headers=headers)

    assert busy.status_code == 503, busy.text
    assert busy.json()["error"] == "ValidationAttemptsExhausted"
    assert int(busy.headers["Retry-After"]) > 0
    queue = entries(store_engine)
    assert [(queue[u]["status"], queue[u]["invalid_reason"]) for u in (1, 2, 3, 4)] == [
        ("invalid", "reclassified: user_disabled"),
        ("invalid", "inactive"),
        ("pending", None),
        ("pending", None),
    ]
    assert scalar(store_engine, "SELECT count(*) FROM assignments") == 0

    retry = client.post(NEXT.format("unsigned_users"), headers=headers)
    assert retry.status_code == 200, retry.text
    assert retry.json()["user_id"] == 4
    queue = entries(store_engine)
    assert (queue[3]["status"], queue[3]["invalid_reason"]) == ("invalid", "no_phone_number")


def test_attempts_running_out_on_the_last_entries_is_204_not_503(
    make_services, make_client, store_engine, replica_engine
):
    svc = make_services(max_validation_attempts=2)
    client = make_client(max_validation_attempts=2)
    seed(replica_engine, store_engine, [1, 2])
    populate(svc, 2)
    replica_exec(replica_engine, "UPDATE users SET is_enabled = false")
    headers = agent_token(store_engine, "alice")

    # Two attempts, two bad entries, nothing pending afterwards: an empty queue, not a 503.
    response = client.post(NEXT.format("unsigned_users"), headers=headers)

    assert scalar(store_engine, f"SELECT count(*) FROM {UQ} WHERE status = 'pending'") == 0
    assert response.status_code == 204, response.text


def test_attempts_running_out_during_a_swap_wait_for_it_before_saying_empty(
    make_services, store_engine, replica_engine, monkeypatch
):
    """The attempts used up the old snapshot while a swap of a new one was in progress: whether
    anything is left is asked after that swap, so the answer is 'busy, retry' (the new entries),
    not 'empty'."""
    svc = make_services(max_validation_attempts=2)
    seed(replica_engine, store_engine, [1, 2])
    populate(svc, 2)
    replica_exec(replica_engine, "UPDATE users SET is_enabled = false")
    (agent,) = make_agents(store_engine, 1)
    pending_left = svc.claims._pending_left

    def swap_meanwhile(conn: Connection, kind: Any) -> bool:
        hold = Hold(store_engine)
        hold.replace_pending()
        hold.conn.execute(text(f"UPDATE {UQ} SET status = 'pending', invalid_reason = NULL"))

        def commit_once_waited_for() -> None:
            try:
                wait_for_waiters(store_engine, 1, timeout=2)
            finally:
                hold.release()

        committer = threading.Thread(target=commit_once_waited_for)
        committer.start()
        try:
            return pending_left(conn, kind)
        finally:
            committer.join(10)

    monkeypatch.setattr(svc.claims, "_pending_left", swap_meanwhile)
    with pytest.raises(ValidationAttemptsExhausted):
        svc.claims.next_user(agent, UNSIGNED, flags())


# -- 10. losing a uniqueness race ---------------------------------------------------------------


@pytest.mark.parametrize("source", ["direct", "other-queue"])
def test_user_already_assigned_elsewhere_is_marked_and_skipped(
    services, store_engine, replica_engine, source
):
    seed(replica_engine, store_engine, [1, 2])
    populate(services, 2)
    other, agent = make_agents(store_engine, 2)
    queue_type = "unsigned_users" if source == "direct" else "outstanding_requests"
    with store_engine.begin() as conn:
        held = conn.execute(
            text(
                "INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score,"
                " lease_expires_at) VALUES (:a, 1, :q, :s, 0, now() + interval '15 minutes')"
                " RETURNING id"
            ),
            {"a": other.id, "q": queue_type, "s": "direct" if source == "direct" else "queue"},
        ).scalar_one()

    got = services.claims.next_user(agent, UNSIGNED, flags())

    assert got is not None and got.assignment.user_id == 2
    queue = entries(store_engine)
    assert (queue[1]["status"], queue[1]["invalid_reason"]) == ("invalid", "already_assigned")
    assert queue[1]["assigned_to_agent"] is None
    rows = {r["id"]: r for r in ledger(store_engine)}
    assert rows[held]["status"] == "active" and rows[held]["agent_id"] == other.id
    assert len(rows) == 2


# -- 11. a claim meeting a swap waits --------------------------------------------------------------


def test_claim_during_a_swap_waits_and_gets_the_new_snapshot(
    services, store_engine, replica_engine
):
    seed(replica_engine, store_engine, [1, 2, 3])
    populate(services, 3)
    (agent,) = make_agents(store_engine, 1)
    # A swap in progress, as the population does it: swap lock taken exclusively, old pending
    # entries deleted and the new ones inserted, not yet committed.
    hold = Hold(store_engine)
    try:
        new_ids = hold.replace_pending()
        thread, out = in_thread(lambda: services.claims.next_user(agent, UNSIGNED, flags()))
        wait_for_waiters(store_engine, 1)
        time.sleep(0.5)
        assert thread.is_alive(), f"the claim did not wait for the swap: {out}"
    finally:
        hold.release()
    thread.join(10)
    assert "error" not in out, out.get("error")
    got = out["result"]
    assert got is not None, "a claim that met a swap answered 'empty'"
    assert got.assignment.user_id == 1
    assert got.assignment.queue_entry_id in new_ids


def test_a_claim_reading_the_replica_holds_up_neither_a_swap_nor_other_claims(
    make_services, services, store_engine, replica_engine
):
    """SPEC 8.1: a claim holds only its entry's row lock while it reads the replica. One claim
    is paused in its replica read (a slow replica); a population's swap meanwhile waits only for
    that entry, and another agent's claim goes through at once. (When claims held the queue's
    swap lock through the replica read, the waiting swap queued every later claim behind the
    slow read: the second claim waited as long as the first.)"""
    seed(replica_engine, store_engine, [1, 2, 3])
    populate(services, 3)
    slow, quick = make_agents(store_engine, 2)
    paused = make_services()
    reading, go_on = threading.Event(), threading.Event()
    read_facts = paused.replica.fetch_claim_facts

    def slow_read(user_id: int) -> Any:
        reading.set()
        go_on.wait(20)
        return read_facts(user_id)

    paused.replica.fetch_claim_facts = slow_read  # type: ignore[method-assign]
    try:
        first, first_out = in_thread(lambda: paused.claims.next_user(slow, UNSIGNED, flags()))
        assert reading.wait(10)
        refresh, refresh_out = in_thread(
            lambda: services.population().run(trigger="test", queue=UNSIGNED)
        )
        wait_for_lock_waiters(store_engine, 1)  # the swap's DELETE, at the paused entry
        started = time.monotonic()
        second = services.claims.next_user(quick, UNSIGNED, flags())
        took = time.monotonic() - started
        assert first.is_alive() and refresh.is_alive()
    finally:
        go_on.set()
    first.join(20)
    refresh.join(20)
    assert "error" not in first_out and "error" not in refresh_out
    assert took < 2, f"the second claim waited {took:.1f} s behind the slow one"
    assert first_out["result"].assignment.user_id == 1
    assert second is not None and second.assignment.user_id == 2
    assert refresh_out["result"].queues[UNSIGNED].status == "succeeded"
    queue = entries(store_engine)
    assert {u: queue[u]["status"] for u in (1, 2, 3)} == {
        1: "assigned",
        2: "assigned",
        3: "pending",
    }


def test_every_connection_busy_is_503_with_retry_after(make_client, store_engine):
    """Overload (every pooled connection busy for the pool's whole timeout) is a 503 to retry,
    not a 500: the dashboards' thread pool and AnyIO's share one store pool."""
    client = make_client(db_pool_size=1, db_max_overflow=0)
    headers = agent_token(store_engine, "alice")
    engine = client.app.state.services.engine
    engine.pool._timeout = 0.3  # QueuePool's checkout timeout, 30 s by default
    with engine.connect():  # the pool's only connection
        got = client.post("/api/queues/unsigned_users/next-user", headers=headers)
    assert got.status_code == 503, got.text
    assert got.json()["error"] == "ServiceBusy"
    assert got.headers["Retry-After"] == "2"


def test_claim_that_outwaits_a_swap_is_503_with_retry_after(
    client, services, store_engine, replica_engine
):
    seed(replica_engine, store_engine, [1, 2])
    populate(services, 2)
    headers = agent_token(store_engine, "alice")
    # A swap that takes longer than a claim may wait for it (lock_timeout, 5 s): it holds every
    # old entry (its DELETE), so the claim finds none to take and waits for the swap lock.
    hold = Hold(store_engine)
    hold.replace_pending()
    try:
        response = client.post(NEXT.format("unsigned_users"), headers=headers)
    finally:
        hold.release()
    assert {u: e["status"] for u, e in entries(store_engine).items()} == {
        1: "pending",
        2: "pending",
    }
    assert scalar(store_engine, "SELECT count(*) FROM assignments") == 0
    assert response.status_code == 503, response.text
    assert int(response.headers["Retry-After"]) > 0


# -- 12. flags and modes at run time --------------------------------------------------------------


def _flag_setup(client, services, store_engine, replica_engine, *, populate_queue: bool = True):
    """Users 11..13 in the unsigned queue (score 5); user 99 (score 0) only in the scores, so the
    queue path serves 11 first and direct mode serves 99 first."""
    seed(replica_engine, store_engine, [11, 12, 13], score=5)
    if populate_queue:
        populate(services, 3)
    seed(replica_engine, store_engine, [99], score=0)
    agent = agent_token(store_engine, "alice")
    supervisor = agent_token(store_engine, "sue", "supervisor")

    def put(**changes: Any) -> None:
        r = client.put("/api/admin/flags", json=changes, headers=supervisor)
        assert r.status_code == 200, r.text
        for name, value in changes.items():
            assert r.json()[name] == value

    def claim() -> Any:
        return client.post(NEXT.format("unsigned_users"), headers=agent)

    def complete(body: dict[str, Any]) -> None:
        r = client.post(
            f"/api/assignments/{body['assignment_id']}/complete",
            json={"outcome": "no_answer"},
            headers=agent,
        )
        assert r.status_code == 200, r.text

    return put, claim, complete


@pytest.mark.parametrize(
    "change",
    [
        {"MIGRATION_MODE": "legacy-only"},
        {"USE_NEW_QUEUE_SERVICES": False},
        {"USE_SEPARATED_QUEUES": False},
    ],
    ids=["legacy-only", "new-services-off", "separated-queues-off"],
)
def test_flag_switches_to_direct_mode_at_run_time(
    client, services, store_engine, replica_engine, change
):
    put, claim, complete = _flag_setup(client, services, store_engine, replica_engine)

    first = claim().json()
    assert (first["source"], first["user_id"]) == ("queue", 11)
    assert first["queue_entry_id"] is not None and first["queue_position"] == 1
    complete(first)

    put(**change)
    direct = claim()
    assert direct.status_code == 200, direct.text
    body = direct.json()
    assert (body["source"], body["user_id"]) == ("direct", 99)
    assert body["queue_entry_id"] is None and body["queue_position"] is None
    assert body["user"]["phone_number"] == own_phone(body["user_id"])
    assert body["details"]["signature_type"] == "initial"
    complete(body)
    row = next(r for r in ledger(store_engine) if r["user_id"] == 99)
    assert (row["source"], row["queue_entry_id"]) == ("direct", None)

    put(
        **{
            "MIGRATION_MODE": "new-only",
            "USE_NEW_QUEUE_SERVICES": True,
            "USE_SEPARATED_QUEUES": True,
        }
    )
    back = claim().json()
    assert (back["source"], back["user_id"]) == ("queue", 12)


def test_empty_queue_new_only_is_204_and_dual_falls_back_to_direct(
    client, services, store_engine, replica_engine
):
    put, claim, _ = _flag_setup(
        client, services, store_engine, replica_engine, populate_queue=False
    )
    assert scalar(store_engine, f"SELECT count(*) FROM {UQ}") == 0

    nothing = claim()
    assert nothing.status_code == 204  # direct candidates exist, but new-only serves queues only
    assert scalar(store_engine, "SELECT count(*) FROM assignments") == 0

    put(MIGRATION_MODE="dual")
    got = claim()
    assert got.status_code == 200, got.text
    assert (got.json()["source"], got.json()["user_id"]) == ("direct", 99)


def test_dual_with_an_all_invalid_queue_falls_back_to_direct(
    client, services, store_engine, replica_engine
):
    put, claim, _ = _flag_setup(client, services, store_engine, replica_engine)
    replica_exec(replica_engine, "UPDATE users SET is_enabled = false WHERE id IN (11, 12, 13)")
    put(MIGRATION_MODE="dual")

    got = claim()

    assert got.status_code == 200, got.text
    assert (got.json()["source"], got.json()["user_id"]) == ("direct", 99)
    queue = entries(store_engine)
    assert {queue[u]["invalid_reason"] for u in (11, 12, 13)} == {"reclassified: user_disabled"}


def test_dual_falls_back_to_direct_when_attempts_run_out(
    make_services, make_client, store_engine, replica_engine
):
    svc = make_services(max_validation_attempts=2)
    client = make_client(max_validation_attempts=2)
    put, claim, _ = _flag_setup(client, svc, store_engine, replica_engine)
    replica_exec(replica_engine, "UPDATE users SET is_enabled = false WHERE id IN (11, 12, 13)")
    put(MIGRATION_MODE="dual")

    got = claim()

    assert got.status_code == 200, got.text
    assert (got.json()["source"], got.json()["user_id"]) == ("direct", 99)
    queue = entries(store_engine)
    # The attempts ran out with an entry still pending: in new-only this is a 503.
    assert [queue[u]["status"] for u in (11, 12, 13)] == ["invalid", "invalid", "pending"]


def test_validation_off_serves_a_reclassifiable_user_but_score_checks_apply(
    client, services, store_engine, replica_engine
):
    put, claim, complete = _flag_setup(client, services, store_engine, replica_engine)
    store_exec(store_engine, "UPDATE user_call_scores SET is_active = false WHERE user_id = 11")
    sign_with_pending_requirement(replica_engine, 12)  # the replica now says outstanding
    put(ENABLE_QUEUE_VALIDATION=False)

    got = claim()

    assert got.status_code == 200, got.text
    body = got.json()
    assert (body["source"], body["user_id"]) == ("queue", 12)
    assert body["user"]["phone_number"] == own_phone(
        body["user_id"]
    )  # contacts still from the replica
    queue = entries(store_engine)
    assert (queue[11]["status"], queue[11]["invalid_reason"]) == ("invalid", "inactive")
    assert (
        scalar(store_engine, "SELECT count(*) FROM queue_transitions WHERE source = 'claim'") == 0
    )
    assert (
        scalar(store_engine, "SELECT current_queue_type FROM user_call_scores WHERE user_id = 12")
        == "unsigned_users"
    )
    complete(body)

    # Switched back on at run time: the next such user is reclassified, not served.
    sign_with_pending_requirement(replica_engine, 13)
    put(ENABLE_QUEUE_VALIDATION=True)
    nothing = claim()
    assert nothing.status_code == 204
    queue = entries(store_engine)
    assert queue[13]["invalid_reason"] == "reclassified: pending_requirements"


def test_direct_mode_under_concurrency_has_no_duplicates(
    make_services, store_engine, replica_engine
):
    size = 150
    svc = make_services(db_pool_size=24, db_max_overflow=4)
    seed(replica_engine, store_engine, range(1, size + 1), score=lambda uid: uid % 5)
    with store_engine.begin() as conn:
        update_flags(conn, svc.settings, {"MIGRATION_MODE": MigrationMode.LEGACY_ONLY}, None)
    served = svc.flags()
    assert served.serving_mode == "direct"
    agents = make_agents(store_engine, 32)
    tracker = Tracker(total=size)

    run_agents(svc, agents, UNSIGNED, served, tracker)

    assert tracker.errors == []
    assert tracker.early_empty == []
    rows = ledger(store_engine)
    assert len(rows) == size
    assert {r["user_id"] for r in rows} == set(range(1, size + 1))
    assert {(r["source"], r["queue_entry_id"], r["status"]) for r in rows} == {
        ("direct", None, "completed")
    }
    assert_no_overlap_per_agent(rows)


def test_a_direct_mode_claim_leaves_the_queue_entries_unlocked(
    services, store_engine, replica_engine, monkeypatch
):
    """The opening statement locks the first pending entry before the flags are known; served
    from the scores, the claim lets it go before its attempt (its replica read included), so
    agents still served from the queue do not pass that entry by."""
    seed(replica_engine, store_engine, [1, 2, 3])
    populate(services, 3)
    (agent,) = make_agents(store_engine, 1)
    lockable: list[int] = []
    read = services.replica.fetch_claim_facts

    def observed(user_id: int) -> Any:
        with store_engine.connect() as conn:
            lockable.append(
                conn.execute(
                    text(
                        f"SELECT count(*) FROM (SELECT id FROM {UQ} WHERE status = 'pending'"
                        " FOR UPDATE SKIP LOCKED) free"
                    )
                ).scalar_one()
            )
            conn.rollback()
        return read(user_id)

    monkeypatch.setattr(services.replica, "fetch_claim_facts", observed)
    got = services.claims.next_user(
        agent, UNSIGNED, flags(MIGRATION_MODE=MigrationMode.LEGACY_ONLY)
    )
    assert got is not None and got.assignment.source == "direct"
    assert lockable == [3], "a queue entry stayed locked through the direct attempt"


# -- 13. lease expiry ---------------------------------------------------------------------------


def test_expired_lease_is_swept_by_the_next_claim_and_the_entry_handed_again(
    make_services, store_engine, replica_engine
):
    svc = make_services(lease_seconds=10)
    seed(replica_engine, store_engine, [1, 2])
    populate(svc, 2)
    late, next_agent = make_agents(store_engine, 2)
    first = svc.claims.next_user(late, UNSIGNED, flags())
    assert first is not None and first.assignment.user_id == 1
    lease = first.assignment.lease_expires_at - first.assignment.assigned_at
    assert timedelta(seconds=9) <= lease <= timedelta(seconds=11)
    entry_id = first.assignment.queue_entry_id
    lapse(store_engine, first.assignment.id)

    second = svc.claims.next_user(next_agent, UNSIGNED, flags())

    assert second is not None
    assert second.assignment.user_id == 1
    assert second.assignment.queue_entry_id == entry_id
    rows = {r["id"]: r for r in ledger(store_engine)}
    assert rows[first.assignment.id]["status"] == "expired"
    assert rows[first.assignment.id]["finished_at"] is not None
    assert rows[second.assignment.id]["status"] == "active"
    queue = entries(store_engine)
    assert (queue[1]["status"], queue[1]["assigned_to_agent"]) == ("assigned", next_agent.id)
    assert queue[2]["status"] == "pending"
    # The late agent has nothing any more, and its outcome is refused.
    with pytest.raises(Conflict):
        svc.assignments.complete(late, first.assignment.id, Outcome.NO_ANSWER, None, None)
    assert svc.assignments.current(late) is None
