"""The four interleavings of issue 10, each forced from outside the application.

Every test pauses one transaction at the exact point where the race lives (a trigger that sleeps,
or a second connection holding what the service's own code took) and lets the other side run
into the gap. Before the claim path took its locks in one written order (the claim functions'
migration) each of these broke a promise of SPEC 3.3: a population failed beside a sweep, a
deactivated person was handed out, a claim and a completion deadlocked, a late outcome landed on
someone else's call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, text

from app.auth.identity import AgentIdentity
from app.config import MigrationMode
from app.errors import Conflict
from app.queues.claims import Claimed
from app.queues.leases import sweep_expired_leases
from app.rules.outcomes import Outcome
from app.services import Services
from app.vocabulary import QueueType
from tests.factories import lapse
from tests.queues.test_claims import flags, in_thread, make_agents, populate, seed

UNSIGNED = QueueType.UNSIGNED_USERS
UQ = "unsigned_users_queue"
DIRECT = flags(MIGRATION_MODE=MigrationMode.LEGACY_ONLY)
QUEUES_ONLY = flags()


@contextmanager
def pause(
    engine: Engine,
    table: str,
    timing: str,
    *,
    seconds: float,
    when: str = "true",
    level: str = "ROW",
) -> Iterator[None]:
    """A trigger that sleeps inside the statement it fires for: a fault injected from outside,
    dropped afterwards. ``when`` is the trigger's WHEN condition (row triggers only)."""
    condition = f" WHEN ({when})" if level == "ROW" else ""
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION cq_test_pause() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$ BEGIN PERFORM pg_sleep({seconds}); RETURN coalesce(NEW, OLD); END $$"
            )
        )
        conn.execute(
            text(
                f"CREATE TRIGGER cq_test_pause {timing} ON {table} FOR EACH {level}{condition}"
                " EXECUTE FUNCTION cq_test_pause()"
            )
        )
    try:
        yield
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP TRIGGER IF EXISTS cq_test_pause ON {table}"))
            conn.execute(text("DROP FUNCTION IF EXISTS cq_test_pause()"))


def wait_until_paused(engine: Engine, *, or_waiting: bool = False, timeout: float = 8.0) -> None:
    """Until a session of this database sleeps in a trigger (or, with ``or_waiting``, waits
    for a lock: the other way the same moment can look once the race is closed)."""
    deadline = time.monotonic() + timeout
    waiting = " OR wait_event_type = 'Lock'" if or_waiting else ""
    with engine.connect() as conn:
        while True:
            stuck = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                    f" AND pid <> pg_backend_pid() AND (wait_event = 'PgSleep'{waiting})"
                )
            ).scalar_one()
            conn.rollback()
            if stuck:
                return
            assert time.monotonic() < deadline, "the paused session never reached its pause"
            time.sleep(0.02)


def live_entries(engine: Engine, user_id: int) -> list[str]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    f"SELECT status FROM {UQ}"
                    " WHERE user_id = :u AND status IN ('pending', 'assigned')"
                ),
                {"u": user_id},
            ).scalars()
        )


def score(engine: Engine, user_id: int) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            text("SELECT * FROM user_call_scores WHERE user_id = :u"), {"u": user_id}
        ).one()


def test_a_swap_beside_a_lease_sweep_never_fails_the_population(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """1. A claim's sweep puts a lapsed assignment's entry back while a swap runs. The swap
    waits for no writer of entries: its DELETE sees the entry still assigned and keeps it, the
    sweep then commits it 'pending', and the swap's insert must leave that user alone, not break
    the one-live-entry-per-user index (seen on an earlier main: UniqueViolation on
    uq_unsigned_users_queue_live_user, the population failed). The user stays pending, in the
    new snapshot's count."""
    user = seed(replica_engine, store_engine, [101])[0]
    seed(replica_engine, store_engine, range(102, 106), score=1)  # behind the first user
    populate(services, 5)
    [agent] = make_agents(store_engine, 1)
    held = services.claims.next_user(agent, UNSIGNED, QUEUES_ONLY)
    assert held is not None and held.assignment.user_id == user
    lapse(store_engine, held.assignment.id)

    with pause(store_engine, UQ, "AFTER DELETE", seconds=2, level="STATEMENT"):
        sweeper = store_engine.connect()
        sweeper_tx = sweeper.begin()
        assert sweep_expired_leases(sweeper) == 1  # the entry is pending again, uncommitted
        thread, out = in_thread(lambda: services.population().run(trigger="test", queue=UNSIGNED))
        wait_until_paused(store_engine)  # the swap, after its DELETE
        sweeper_tx.commit()
        sweeper.close()
        thread.join(15)
    report = out["result"]
    figures = report.queues[UNSIGNED]
    assert figures.status == "succeeded", figures.error
    assert live_entries(store_engine, user) == ["pending"]
    assert figures.populated + figures.kept_assigned == 5


def test_the_score_check_and_the_hand_out_are_one_decision(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """2. Dual mode: the queue path read the score row (active), then, before its ledger insert,
    a direct-mode hold of the same user completed with do_not_contact. Without the score row
    locked and checked after the ledger insert, the queue path handed out a person who had just
    asked never to be called (seen on the previous main)."""
    user = seed(replica_engine, store_engine, [201])[0]
    populate(services, 1)
    direct_agent, queue_agent = make_agents(store_engine, 2)
    hold = services.claims.next_user(direct_agent, UNSIGNED, DIRECT)
    assert hold is not None and hold.assignment.source == "direct"
    with pause(
        store_engine,
        "assignments",
        "BEFORE INSERT",
        seconds=2,
        when=f"NEW.agent_id = {queue_agent.id}",
    ):
        thread, out = in_thread(
            lambda: services.claims.next_user(queue_agent, UNSIGNED, QUEUES_ONLY)
        )
        wait_until_paused(store_engine)
        done = services.assignments.complete(
            direct_agent, hold.assignment.id, Outcome.DO_NOT_CONTACT, None, None
        )
        assert done.score is not None and done.score["is_active"] is False
        thread.join(15)
    assert "error" not in out, out.get("error")
    assert out["result"] is None  # nobody left: the only user asked not to be called
    with store_engine.connect() as conn:
        handed = conn.execute(
            text("SELECT count(*) FROM assignments WHERE user_id = :u AND agent_id = :a"),
            {"u": user, "a": queue_agent.id},
        ).scalar_one()
        entry = conn.execute(
            text(f"SELECT status, invalid_reason FROM {UQ} WHERE user_id = :u"), {"u": user}
        ).one()
    assert handed == 0
    assert (entry.status, entry.invalid_reason) == ("invalid", "inactive")


def test_a_direct_claim_and_a_completion_of_the_same_user_never_deadlock(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """3. Direct mode used to lock the score row before its ledger insert, against the order
    everywhere else (entry, ledger, score row). Paused just before that insert, with the score
    row held: a queue claim of the same user went through, its completion waited for the score
    row, and the direct claim's insert waited for the completion: a deadlock, one side a 503
    (seen on the previous main: 40P01)."""
    user = seed(replica_engine, store_engine, [301])[0]
    populate(services, 1)
    direct_agent, queue_agent = make_agents(store_engine, 2)
    with store_engine.begin() as conn:  # the list's key is recorded (a first hand-out would)
        services.suppression.check_key(conn)
    with pause(
        store_engine,
        "assignments",
        "BEFORE INSERT",
        seconds=2,
        when=f"NEW.agent_id = {direct_agent.id}",
    ):
        thread, out = in_thread(lambda: services.claims.next_user(direct_agent, UNSIGNED, DIRECT))
        wait_until_paused(store_engine)
        got = services.claims.next_user(queue_agent, UNSIGNED, QUEUES_ONLY)
        assert got is not None and got.assignment.user_id == user
        completion, done = in_thread(
            lambda: services.assignments.complete(
                queue_agent, got.assignment.id, Outcome.NO_ANSWER, None, None
            )
        )
        completion.join(15)
        thread.join(15)
    assert "error" not in done, done.get("error")
    assert "error" not in out, out.get("error")
    # The direct claim met the outcome under the score row's lock: no call for 4 hours.
    assert out["result"] is None
    with store_engine.connect() as conn:
        holders = conn.execute(
            text(
                "SELECT agent_id, status FROM assignments WHERE user_id = :u ORDER BY assigned_at"
            ),
            {"u": user},
        ).all()
    assert [tuple(h) for h in holders] == [(queue_agent.id, "completed")]


def _late_outcome_against_a_new_hand_out(
    services: Services,
    store_engine: Engine,
    replica_engine: Engine,
    second_claim: Callable[[AgentIdentity], Claimed | None],
    *,
    rebuild: bool,
) -> None:
    user = seed(replica_engine, store_engine, [401])[0]
    populate(services, 1)
    first, second = make_agents(store_engine, 2)
    held = services.claims.next_user(first, UNSIGNED, QUEUES_ONLY)
    assert held is not None
    lapse(store_engine, held.assignment.id)
    with store_engine.begin() as conn:
        assert sweep_expired_leases(conn) == 1
    if rebuild:  # a new snapshot, built after the lease lapsed, has the user again
        populate(services, 1)
    with pause(
        store_engine, "assignments", "AFTER INSERT", seconds=2, when=f"NEW.agent_id = {second.id}"
    ):
        thread, out = in_thread(lambda: second_claim(second))
        wait_until_paused(store_engine)
        late: Any
        try:
            late = services.assignments.complete(
                first, held.assignment.id, Outcome.NOT_INTERESTED, None, None
            )
        except Conflict as exc:  # the other acceptable answer: 409
            late = exc
        thread.join(15)
    assert "error" not in out, out.get("error")
    got = out["result"]
    accepted = not isinstance(late, Conflict)
    handed = got is not None and got.assignment.user_id == user
    # Never both: the late outcome accepted AND the user now the second agent's call.
    assert accepted != handed
    with store_engine.connect() as conn:
        active = (
            conn.execute(
                text("SELECT agent_id FROM assignments WHERE user_id = :u AND status = 'active'"),
                {"u": user},
            )
            .scalars()
            .all()
        )
    row = score(store_engine, user)
    if accepted:
        assert row.last_outcome == "not_interested" and row.total_attempts == 1
        assert active == []
    else:
        assert row.total_attempts == 0
        assert active == [second.id]


def test_a_late_outcome_never_lands_on_a_direct_mode_hand_out_in_flight(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """4. A late completion of one's own lapsed assignment is accepted "as long as the user has
    not been handed to anyone since"; a hand-out still in flight was invisible to that check, and
    the late not_interested landed on a user the second agent now held (seen on the previous
    main). Both now take the score row: one of them sees the other."""
    _late_outcome_against_a_new_hand_out(
        services,
        store_engine,
        replica_engine,
        lambda agent: services.claims.next_user(agent, UNSIGNED, DIRECT),
        rebuild=False,
    )


def test_a_late_outcome_never_lands_on_a_new_snapshots_hand_out_in_flight(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """4, through a queue entry of a new snapshot built after the lease lapsed."""
    _late_outcome_against_a_new_hand_out(
        services,
        store_engine,
        replica_engine,
        lambda agent: services.claims.next_user(agent, UNSIGNED, QUEUES_ONLY),
        rebuild=True,
    )


def test_lapsed_lease_then_late_outcome_with_nobody_else_is_still_accepted(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """The other side of 4: with no hand-out since, the late outcome counts (SPEC 3.3)."""
    user = seed(replica_engine, store_engine, [501])[0]
    populate(services, 1)
    [agent] = make_agents(store_engine, 1)
    held = services.claims.next_user(agent, UNSIGNED, QUEUES_ONLY)
    assert held is not None
    lapse(store_engine, held.assignment.id)
    with store_engine.begin() as conn:
        sweep_expired_leases(conn)
    done = services.assignments.complete(agent, held.assignment.id, Outcome.NO_ANSWER, None, None)
    assert done.assignment.status == "completed"
    row = score(store_engine, user)
    assert row.total_attempts == 1
    assert row.next_call_after is not None
    assert live_entries(store_engine, user) == []
    assert timedelta(0) < row.next_call_after - row.last_call_at <= timedelta(hours=4)
