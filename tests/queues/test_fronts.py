"""The queues' fronts (app/queues/fronts.py): claims look from where the pending entries start,
so a snapshot held open elsewhere does not make every claim step over every entry handed out
since; and the serving order holds whatever moved the front: an entry put back below it is
served first, a lapsed lease's entry too, and a swap starts its new snapshot from the top."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from app.queues.fronts import advance_fronts
from app.rules.outcomes import Outcome
from app.services import Services
from tests.factories import lapse
from tests.queues.test_claims import UNSIGNED, flags, make_agents, populate, seed

CLAIM_ORDER_INDEX = "ix_unsigned_users_queue_claim_order"


def front(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT position FROM queue_fronts WHERE queue_type = 'unsigned_users'")
            ).scalar_one()
        )


def call(services: Services, agent: Any) -> int:
    """One call made and finished (no answer); the user handed out."""
    got = services.claims.next_user(agent, UNSIGNED, flags())
    assert got is not None
    services.assignments.complete(agent, got.assignment.id, Outcome.NO_ANSWER, None, None)
    return int(got.assignment.user_id)


def test_the_front_moves_to_the_first_entry_never_handed_out_and_claims_go_on_in_order(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    seed(replica_engine, store_engine, range(1, 7), score=lambda uid: uid)
    populate(services, 6)
    (agent,) = make_agents(store_engine, 1)
    assert [call(services, agent) for _ in range(3)] == [1, 2, 3]
    assert front(store_engine) == 0

    assert advance_fronts(store_engine)["unsigned_users"] == 4
    assert front(store_engine) == 4
    assert [call(services, agent) for _ in range(3)] == [4, 5, 6]
    # Nothing pending is left: the front goes past every position, and claims find nothing.
    assert advance_fronts(store_engine)["unsigned_users"] == 2**31 - 1
    assert services.claims.next_user(agent, UNSIGNED, flags()) is None


def test_an_entry_released_with_requeue_below_the_front_is_served_first(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    seed(replica_engine, store_engine, range(1, 6), score=lambda uid: uid)
    populate(services, 5)
    holder, caller = make_agents(store_engine, 2)
    held = services.claims.next_user(holder, UNSIGNED, flags())
    assert held is not None and held.assignment.user_id == 1
    assert call(services, caller) == 2
    advance_fronts(store_engine)
    assert front(store_engine) == 3  # user 1 is out on a call: not pending

    services.assignments.release(holder, held.assignment.id, requeue=True, reason=None)

    assert call(services, caller) == 1  # first in the serving order again, behind the front
    assert call(services, caller) == 3


def test_an_entry_whose_lease_lapsed_below_the_front_is_served_first(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    seed(replica_engine, store_engine, range(1, 6), score=lambda uid: uid)
    populate(services, 5)
    holder, caller = make_agents(store_engine, 2)
    held = services.claims.next_user(holder, UNSIGNED, flags())
    assert held is not None and held.assignment.user_id == 1
    assert call(services, caller) == 2
    advance_fronts(store_engine)
    assert front(store_engine) == 3

    lapse(store_engine, held.assignment.id)  # the next claim's sweep puts the entry back

    assert call(services, caller) == 1
    # An advance now leaves the front where it is: the put-back entry was never its business.
    advance_fronts(store_engine)
    assert front(store_engine) == 3
    assert call(services, caller) == 3


def test_a_swap_starts_its_snapshot_from_the_top(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    seed(replica_engine, store_engine, range(1, 4), score=lambda uid: uid)
    populate(services, 3)
    (agent,) = make_agents(store_engine, 1)
    assert call(services, agent) == 1
    advance_fronts(store_engine)
    assert front(store_engine) == 2
    seed(replica_engine, store_engine, range(10, 13), score=0)  # new leads, served first

    report = services.population().run(trigger="test", queue=UNSIGNED)

    assert report.queues[UNSIGNED].status == "succeeded"
    assert front(store_engine) == 0
    assert call(services, agent) == 10


def test_beside_a_held_snapshot_a_claim_steps_over_nothing_handed_out_before_the_front(
    services: Services, store_engine: Engine, replica_engine: Engine
) -> None:
    """With a snapshot held open (a report, a backup), the entries handed out since stay in the
    claim-order index; a claim looking from the top reads every one of them, one looking from
    the front reads almost none."""
    seed(replica_engine, store_engine, range(1, 101), score=lambda uid: uid)
    populate(services, 100)
    (agent,) = make_agents(store_engine, 1)
    with store_engine.connect() as report:
        report.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ"))
        report.execute(text("SELECT count(*) FROM unsigned_users_queue")).scalar_one()
        handed_out = [call(services, agent) for _ in range(80)]
        assert handed_out == list(range(1, 81))

        from_the_top = index_entries_read_by_a_claim(store_engine, agent.id)
        advance_fronts(store_engine)
        from_the_front = index_entries_read_by_a_claim(store_engine, agent.id)
        report.rollback()

    assert from_the_top >= 80, from_the_top
    assert from_the_front <= 5, from_the_front


def index_entries_read_by_a_claim(engine: Engine, agent_id: int) -> int:
    """How many entries of the claim-order index one claim attempt reads (rolled back)."""
    counter = text("SELECT pg_stat_get_xact_tuples_returned(CAST(:index AS regclass))")
    with engine.connect() as conn:
        # The counter holds what this connection read before, not yet reported: a difference.
        before = conn.execute(counter, {"index": CLAIM_ORDER_INDEX}).scalar_one()
        taken = conn.execute(
            text(
                "SELECT user_id FROM cq_claim(:agent, 'unsigned_users', 'queue', false,"
                " '{}'::bigint[], 0, 100, 100, 100, 15)"
            ),
            {"agent": agent_id},
        ).scalar_one()
        assert taken == 81
        after = conn.execute(counter, {"index": CLAIM_ORDER_INDEX}).scalar_one()
        conn.rollback()
    return int(after - before)
