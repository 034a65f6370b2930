"""A callback booked while a population builds its snapshot keeps its person out of the new
snapshot (SPEC 3.2 and 7.2: a person with an open callback comes back through it only).

The race is forced from outside the service: a trigger on ``callbacks`` makes the booking wait
for an advisory lock the test holds, so the booking is written but not committed when the
population takes its walk's snapshot; the walk then waits for the replica (its users table
locked by the test), and the test lets the booking commit before the swap.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sqlalchemy import Engine, text

from app.rules.outcomes import Outcome
from app.services import Services
from app.vocabulary import QueueType
from tests.queues.test_claims import flags, in_thread, make_agents, populate, seed
from tests.queues.test_promises import replica_held, wait_for_replica_waiter

UNSIGNED = QueueType.UNSIGNED_USERS
UQ = "unsigned_users_queue"
GATE = (4242, 7)  # the test's advisory lock: two int keys, nothing of the service's


@contextmanager
def gate_on_callback_inserts(engine: Engine) -> Iterator[Callable[[], None]]:
    """While the test holds the gate, an insert into ``callbacks`` waits for it inside its
    transaction. Yields the function that opens the gate."""
    holder = engine.connect()
    holder.execute(text("SELECT pg_advisory_lock(:a, :b)"), {"a": GATE[0], "b": GATE[1]})
    holder.commit()
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION cq_test_gate() RETURNS trigger LANGUAGE plpgsql AS"
                f" $$ BEGIN PERFORM pg_advisory_xact_lock_shared({GATE[0]}, {GATE[1]});"
                " RETURN NEW; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER cq_test_gate AFTER INSERT ON callbacks FOR EACH ROW"
                " EXECUTE FUNCTION cq_test_gate()"
            )
        )
    opened = False

    def open_gate() -> None:
        nonlocal opened
        if not opened:
            holder.execute(text("SELECT pg_advisory_unlock(:a, :b)"), {"a": GATE[0], "b": GATE[1]})
            holder.commit()
            opened = True

    try:
        yield open_gate
    finally:
        open_gate()
        holder.close()
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER IF EXISTS cq_test_gate ON callbacks"))
            conn.execute(text("DROP FUNCTION IF EXISTS cq_test_gate()"))


def waiting_for_advisory(engine: Engine, key: int, sub: int, *, two_keys: bool) -> bool:
    """Whether a session of this database waits for that advisory lock."""
    with engine.connect() as conn:
        return bool(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    "                  WHERE datname = current_database())"
                    " AND classid = CAST(:key AS bigint) AND objid = :sub AND objsubid = :kind"
                ),
                {"key": key, "sub": sub, "kind": 2 if two_keys else 1},
            ).scalar_one()
        )


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.02)


def test_a_callback_booked_while_the_snapshot_is_built_keeps_the_person_out(
    make_services: Callable[..., Services], store_engine: Engine, replica_engine: Engine
) -> None:
    svc = make_services()
    seed(replica_engine, store_engine, [1], score=0)
    seed(replica_engine, store_engine, [2, 3], score=1)
    populate(svc, 3)
    [agent] = make_agents(store_engine, 1)
    held = svc.claims.next_user(agent, UNSIGNED, flags())
    assert held is not None and held.assignment.user_id == 1
    # The lease runs out: the person is a candidate of the next walk (SPEC 3.3), and the
    # agent's outcome still counts while nobody else has had them.
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE assignments SET lease_expires_at = now() - interval '1 second'"))
        callback_at = conn.execute(text("SELECT now() + interval '1 hour'")).scalar_one()

    with gate_on_callback_inserts(store_engine) as open_gate:
        completion, done = in_thread(
            lambda: svc.assignments.complete(
                agent, held.assignment.id, Outcome.CALL_BACK, callback_at, None
            )
        )
        # The outcome is written and the callback inserted, not committed.
        wait_for(
            lambda: waiting_for_advisory(store_engine, GATE[0], GATE[1], two_keys=True),
            "the booking to reach the gate",
        )
        with replica_held(replica_engine):
            population, report = in_thread(
                lambda: svc.population().run(trigger="test", queue=UNSIGNED)
            )
            # The walk has its snapshot (user 1 a candidate: the lapsed assignment, no callback
            # yet) and waits for the replica; the booking commits before the swap.
            wait_for_replica_waiter(replica_engine)
            assert completion.is_alive()
            open_gate()
            completion.join(15)
        population.join(15)

    assert "error" not in done, done.get("error")
    booked = done["result"].assignment.booked_callback_id
    assert booked is not None
    assert "error" not in report, report.get("error")
    figures = report["result"].queues[UNSIGNED]
    assert figures.status == "succeeded", figures.error
    # The walk kept user 1 (three eligible), and the swap left them out: the callback is
    # their only way back.
    assert (figures.eligible, figures.populated) == (3, 2)
    with store_engine.connect() as conn:
        live = conn.execute(
            text(
                f"SELECT user_id, status FROM {UQ} WHERE status IN ('pending', 'assigned')"
                " ORDER BY user_id"
            )
        ).all()
        callback = conn.execute(
            text("SELECT status, user_id, due_at FROM callbacks WHERE id = :id"), {"id": booked}
        ).one()
        finished = conn.execute(
            text("SELECT status, finished_at FROM assignments WHERE id = :id"),
            {"id": held.assignment.id},
        ).one()
        walk_started = conn.execute(
            text("SELECT started_at FROM population_runs ORDER BY started_at DESC LIMIT 1")
        ).scalar_one()
    assert [tuple(r) for r in live] == [(2, "pending"), (3, "pending")]
    assert tuple(callback) == ("scheduled", 1, callback_at)
    # What makes this the callback's doing: the outcome was written before the run began, so
    # "completed since the walk began" does not cover it.
    assert finished.status == "completed"
    assert finished.finished_at < walk_started
