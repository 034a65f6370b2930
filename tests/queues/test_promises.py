"""Promises of the queues that hold under every interleaving (SPEC 8.1), each forced at the point
where it used to fail:

* nobody falls out of the queue: a person released with re-queue, or whose lease lapses, while
  a population builds its snapshot is pending after the swap;
* a lease sweep waits for no swap (it used to take both queues' swap locks);
* multi-row writers of score rows lock them in one stated order (by user id): a reclassification
  beside a scores upsert queues up instead of deadlocking.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, text

from app.intake.rows import ScoreRow, upsert_scores
from app.queues.leases import sweep_expired_leases
from app.queues.transitions import Reclassification, reclassify
from app.services import Services
from tests.factories import lapse
from tests.queues.test_claims import (
    UNSIGNED,
    Hold,
    entries,
    flags,
    in_thread,
    make_agents,
    populate,
    seed,
)
from tests.queues.test_interleavings import pause, wait_until_paused


@contextmanager
def replica_held(replica_engine: Engine) -> Iterator[None]:
    """The replica's users table locked, as a long maintenance statement there would: a
    population's walk, which has taken its snapshot of the candidates, waits for it when it
    classifies them."""
    with replica_engine.connect() as conn:
        conn.execute(text("LOCK TABLE users IN ACCESS EXCLUSIVE MODE"))
        try:
            yield
        finally:
            conn.rollback()


def wait_for_replica_waiter(replica_engine: Engine, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    with replica_engine.connect() as conn:
        while not conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND wait_event_type = 'Lock'"
            )
        ).scalar_one():
            conn.rollback()
            assert time.monotonic() < deadline, "the walk never reached the replica"
            time.sleep(0.02)


@pytest.mark.parametrize("given_back", ["released", "lapsed"])
def test_a_person_given_back_while_a_population_builds_is_in_the_new_snapshot(
    services: Services, store_engine: Engine, replica_engine: Engine, given_back: str
) -> None:
    """The walk leaves out people someone holds; the swap drops every unassigned entry of the
    old snapshot. A person given back in between (released with re-queue, or whose lease ran
    out) used to drop out of both snapshots until the next population."""
    seed(replica_engine, store_engine, [1, 2, 3], score=lambda uid: uid)
    populate(services, 3)
    (agent,) = make_agents(store_engine, 1)
    held = services.claims.next_user(agent, UNSIGNED, flags())
    assert held is not None and held.assignment.user_id == 1

    with replica_held(replica_engine):
        refresh, out = in_thread(lambda: services.population().run(trigger="test", queue=UNSIGNED))
        wait_for_replica_waiter(replica_engine)
        if given_back == "released":
            services.assignments.release(agent, held.assignment.id, requeue=True, reason=None)
        else:
            lapse(store_engine, held.assignment.id)
    refresh.join(20)

    assert "error" not in out, out.get("error")
    assert out["result"].queues[UNSIGNED].status == "succeeded"
    queue = entries(store_engine)
    assert {u: queue[u]["status"] for u in queue} == {1: "pending", 2: "pending", 3: "pending"}
    assert out["result"].queues[UNSIGNED].populated == 3
    assert [e["queue_position"] for e in sorted(queue.values(), key=lambda e: e["user_id"])] == [
        1,
        2,
        3,
    ]
    again = services.claims.next_user(agent, UNSIGNED, flags())
    assert again is not None and again.assignment.user_id == 1


def test_a_person_still_held_at_the_swap_keeps_their_call_and_no_second_entry(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    seed(replica_engine, store_engine, [1, 2], score=lambda uid: uid)
    populate(services, 2)
    (agent,) = make_agents(store_engine, 1)
    held = services.claims.next_user(agent, UNSIGNED, flags())
    assert held is not None

    report = services.population().run(trigger="test", queue=UNSIGNED)

    figures = report.queues[UNSIGNED]
    assert (figures.populated, figures.kept_assigned) == (1, 1)
    queue = entries(store_engine)
    assert {u: queue[u]["status"] for u in queue} == {1: "assigned", 2: "pending"}


def test_a_sweep_waits_for_no_swap(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """A lapsed lease is expired while a swap of the queue holds its swap lock (it used to wait
    for the swap, and every claim's sweep with it)."""
    seed(replica_engine, store_engine, [1, 2])
    populate(services, 2)
    (agent,) = make_agents(store_engine, 1)
    held = services.claims.next_user(agent, UNSIGNED, flags())
    assert held is not None
    lapse(store_engine, held.assignment.id)
    hold = Hold(store_engine)
    try:
        started = time.monotonic()
        with store_engine.begin() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '1s'"))
            expired = sweep_expired_leases(conn)
        took = time.monotonic() - started
    finally:
        hold.release()
    assert expired == 1
    assert took < 1


def upsert(services: Services, rows: list[ScoreRow]) -> Callable[[], Any]:
    return lambda: upsert_scores(services.engine, services.replica, rows)


def test_a_reclassification_beside_a_scores_upsert_never_deadlocks(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """Users 1 and 2, their score rows stored 2 before 1. A reclassification of both is paused
    on its first row update; a scores upsert of both (which locks by user id) then starts. When
    the reclassification locked rows in its plan's order (the table's, 2 first), it held 2 and
    waited for 1 while the upsert held 1 and waited for 2: a deadlock (40P01). Locking both by
    user id before it updates anything, it holds 1 and 2 and the upsert waits its turn."""
    seed(replica_engine, store_engine, [2])
    seed(replica_engine, store_engine, [1])
    with pause(
        store_engine, "user_call_scores", "BEFORE UPDATE", seconds=2, when="OLD.user_id = 2"
    ):

        def reclassify_both() -> int:
            with store_engine.begin() as conn:
                return reclassify(
                    conn,
                    str(UNSIGNED),
                    [Reclassification(1, None, "test"), Reclassification(2, None, "test")],
                    source="test",
                )

        moving, moved = in_thread(reclassify_both)
        wait_until_paused(store_engine)
        scoring, scored = in_thread(upsert(services, [ScoreRow(1, 7), ScoreRow(2, 9)]))
        moving.join(15)
        scoring.join(15)
    assert "error" not in moved, moved.get("error")
    assert "error" not in scored, scored.get("error")
    assert moved["result"] == 2
    with store_engine.connect() as conn:
        rows = conn.execute(
            text("SELECT user_id, current_score, current_queue_type FROM user_call_scores")
        ).all()
    assert sorted(tuple(r) for r in rows) == [(1, 7, None), (2, 9, None)]


def test_claims_go_on_from_the_old_front_while_a_swap_writes_the_new_snapshot(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """SPEC 8.1 and 3.2: a swap keeps claims waiting only through its last statements. Here it
    is paused while it inserts the new snapshot (its other old entries already deleted); a claim
    meanwhile takes the old snapshot's first entry at once (it used to wait for the whole swap),
    and the new snapshot is whole afterwards: the claimed entry a live call, the rest pending
    in serving order, one live entry per person."""
    seed(replica_engine, store_engine, range(1, 31), score=lambda uid: uid)
    populate(services, 30)
    (agent,) = make_agents(store_engine, 1)
    with pause(store_engine, "unsigned_users_queue", "AFTER INSERT", seconds=2, level="STATEMENT"):
        refresh, out = in_thread(lambda: services.population().run(trigger="test", queue=UNSIGNED))
        wait_until_paused(store_engine)
        started = time.monotonic()
        got = services.claims.next_user(agent, UNSIGNED, flags())
        took = time.monotonic() - started
        refresh.join(15)
    assert "error" not in out, out.get("error")
    assert took < 1, f"the claim waited {took:.1f} s for the swap"
    assert got is not None and got.assignment.user_id == 1
    figures = out["result"].queues[UNSIGNED]
    assert (figures.status, figures.populated, figures.kept_assigned) == ("succeeded", 29, 1)
    queue = entries(store_engine)
    assert queue[1]["status"] == "assigned" and queue[1]["id"] == got.assignment.queue_entry_id
    pending = sorted((e["queue_position"], u) for u, e in queue.items() if u != 1)
    assert [u for _, u in pending] == list(range(2, 31))
    assert all(e["status"] == "pending" for u, e in queue.items() if u != 1)


def test_a_claim_that_meets_a_swap_never_waits_for_it_holding_a_row(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """A claim attempt that finds no entry while a swap holds the queue may already hold rows
    the swap takes after its lock (an entry its sweep put back, a row its search passed over).
    Waiting for the swap lock there closed a cycle: the swap waited for the row, the claim for
    the lock, and PostgreSQL ended one of them. The attempt now only tries the lock and answers
    'swap' at once; the caller then waits holding nothing (below: the whole request)."""
    seed(replica_engine, store_engine, range(1, 11), score=lambda uid: uid)
    populate(services, 10)
    (agent,) = make_agents(store_engine, 1)
    # An entry a claim marked meanwhile, which the swap's last statements take (the front's
    # DELETE): the claim's transaction will hold it.
    with store_engine.begin() as conn:
        marked = conn.execute(
            text(
                "UPDATE unsigned_users_queue SET status = 'skipped' WHERE user_id = 10 RETURNING id"
            )
        ).scalar_one()
    with store_engine.connect() as swap, store_engine.connect() as claim:
        # The swap: its lock, then every pending entry.
        swap.execute(text("SELECT pg_advisory_xact_lock(1667329132, 1)"))
        swap.execute(
            text("SELECT id FROM unsigned_users_queue WHERE status = 'pending' FOR UPDATE")
        )
        claim.execute(text("SET LOCAL lock_timeout = '2s'"))
        claim.execute(
            text("SELECT 1 FROM unsigned_users_queue WHERE id = :id FOR UPDATE"), {"id": marked}
        )
        started = time.monotonic()
        answer = claim.execute(
            text(
                "SELECT source FROM cq_claim(:agent, 'unsigned_users', 'queue', true,"
                " CAST('{}' AS bigint[]), 0, 10, 3, 10, 30)"
            ),
            {"agent": agent.id},
        ).scalar_one()
        assert answer == "swap"
        assert time.monotonic() - started < 1
        claim.rollback()
        swap.rollback()

    # The whole request meanwhile: it waits for the swap holding nothing and is served after it.
    with store_engine.connect() as swap:
        swap.execute(text("SELECT pg_advisory_xact_lock(1667329132, 1)"))
        swap.execute(
            text("SELECT id FROM unsigned_users_queue WHERE status = 'pending' FOR UPDATE")
        )
        request, out = in_thread(lambda: services.claims.next_user(agent, UNSIGNED, flags()))
        time.sleep(0.5)
        assert request.is_alive(), "the request answered while the swap held every entry"
        swap.commit()
        request.join(10)
    assert "error" not in out, out.get("error")
    assert out["result"] is not None and out["result"].assignment.user_id == 1
