"""One agent per person, with callbacks in play (SPEC 7.2 with 3.3): 64 agents claiming in dual
mode while callbacks fall due and populations run. Every due callback is handed out once at a
time and completed once, and a person with an open callback is never handed out from a queue
entry or in direct mode, all checked afterwards from the ledger (``assignments``), which records
every hand-out with database times.

Real PostgreSQL, real connections in parallel, no mocks; threads call the services in-process as
tests/queues does. The race that only the hand-out's open-callback check closes is set up on
purpose before the agents start, through the service's own paths: a person whose lease ran out
is put back by a population (a new pending entry), then the agent's late outcome books a
callback, which falls due within its owner's personal window. The owner is away, so every other
agent passes over the callback and meets the pending entry, whose score row says "callable":
only the open callback may stop that hand-out.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from unittest.mock import patch

from sqlalchemy import Engine, text

from app.auth.identity import AgentIdentity
from app.config import MigrationMode
from app.errors import Conflict
from app.queues import swap
from app.queues.claims import ValidationAttemptsExhausted
from app.queues.leases import sweep_expired_leases
from app.rules.outcomes import Outcome
from app.services import Services
from app.vocabulary import QueueType
from tests.queues.test_claims import flags, make_agents, populate, seed

UNSIGNED = QueueType.UNSIGNED_USERS
UQ = "unsigned_users_queue"
DUAL = flags(MIGRATION_MODE=MigrationMode.DUAL)
QUEUES_ONLY = flags()

AGENTS = 64
# 64 threads share 20 store connections (and as many to the replica): real contention, and room
# under max_connections for whatever else uses the server.
POOL = {"db_pool_size": 16, "db_max_overflow": 4}
USERS = 480
STALE = 8  # people with a due callback and a pending entry when the agents start
SNAPSHOT = 40  # QUEUE_SIZE_LIMIT: small, so the queue runs dry and dual mode goes direct
RUN_SECONDS = 6.0
# What an agent does with a call: let the lease run out and answer late, book a callback, or
# record no answer (which keeps the person away for four hours).
ABANDON, BOOK = 0.08, 0.35

# Make not-yet-due callbacks due now, as the clock would: half within the owner's personal
# window (30 min by default), half past it; the score row's next_call_after follows, as the
# booking set it to the same moment.
MAKE_DUE = text(
    """
    WITH due AS (
        UPDATE callbacks
           SET due_at = now() - CASE WHEN random() < 0.5 THEN interval '1 minute'
                                     ELSE interval '31 minutes' END,
               updated_at = now()
         WHERE status = 'scheduled' AND due_at > now()
        RETURNING user_id, due_at
    )
    UPDATE user_call_scores s SET next_call_after = due.due_at
      FROM due WHERE s.user_id = due.user_id
    """
)
FOREVER = datetime.max.replace(tzinfo=UTC)
# The lease runs out now (the lapsing transaction's start), as the clock would have it.
LAPSE = text("UPDATE assignments SET lease_expires_at = now() WHERE id = :id")


def in_an_hour() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def held_until(row: Any) -> datetime:
    """When a hand-out stopped holding its person (SPEC 3.3: active while its status is active
    and its lease runs). An expired one: when its lease ran out, which is before the sweep that
    marked it (finished_at). A hand-out waiting in its ledger insert for that sweep stamps its
    assigned_at before the wait, so it may precede the sweep's finished_at, never the lease's
    end. Anything else: when it finished."""
    if row.status == "expired":
        return min(row.lease_expires_at, row.finished_at)  # type: ignore[no-any-return]
    return row.finished_at or FOREVER  # type: ignore[no-any-return]


def brief(row: Any) -> str:
    return (
        f"{row.source} {row.status} agent={row.agent_id} user={row.user_id}"
        f" at={row.assigned_at.time()} lease={row.lease_expires_at.time()}"
        f" finished={row.finished_at and row.finished_at.time()} outcome={row.outcome}"
    )


def all_rows(engine: Engine, sql: str) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql)).all())


def set_up_stale_entries(svc: Services, store: Engine, owners: list[AgentIdentity]) -> set[int]:
    """Users 1..STALE end with a pending entry in the current snapshot and an open callback,
    due within its owner's personal window, through the service's own paths."""
    held = [svc.claims.next_user(owner, UNSIGNED, QUEUES_ONLY) for owner in owners]
    assert all(h is not None and h.assignment.source == "queue" for h in held)
    users = {h.assignment.user_id for h in held if h is not None}
    assert users == set(range(1, STALE + 1))
    with svc.engine.begin() as conn:
        for h in held:
            assert h is not None
            conn.execute(LAPSE, {"id": h.assignment.id})
    # The population sweeps the lapsed leases and queues those people again (SPEC 3.3), in
    # entries of its own: with no front kept from the old snapshot (app/queues/swap.py), whose
    # entries an outcome that counts would close...
    with patch.object(swap, "FRONT_MAX", 0):
        populate(svc, SNAPSHOT)
    # ... and then their agents' outcomes arrive: nobody has had them since, so they count,
    # and each books a callback.
    for owner, h in zip(owners, held, strict=True):
        assert h is not None
        done = svc.assignments.complete(
            owner, h.assignment.id, Outcome.CALL_BACK, in_an_hour(), None
        )
        assert done.assignment.booked_callback_id is not None
    with store.begin() as conn:
        conn.execute(
            text(
                "UPDATE callbacks SET due_at = now() - interval '1 minute'"
                " WHERE status = 'scheduled'"
            )
        )
        conn.execute(
            text(
                "UPDATE user_call_scores s SET next_call_after = c.due_at FROM callbacks c"
                " WHERE c.user_id = s.user_id AND c.status = 'scheduled'"
            )
        )
        both = conn.execute(
            text(
                f"SELECT e.user_id FROM {UQ} e JOIN callbacks c ON c.user_id = e.user_id"
                " JOIN user_call_scores s ON s.user_id = e.user_id"
                " WHERE e.status = 'pending' AND c.status = 'scheduled' AND c.due_at <= now()"
                " AND s.next_call_after <= now() AND s.is_active"
            )
        ).scalars()
        assert set(both) == users, "the race this test needs was not set up"
    return users


class Floor:
    """The agents, a clock making callbacks fall due, and a population loop, all at once."""

    def __init__(self, svc: Services, agents: list[AgentIdentity]) -> None:
        self.svc = svc
        self.agents = agents
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.claims: list[tuple[int, str, int]] = []
        self.late: Counter[str] = Counter()
        self.runs: list[Any] = []
        self.due_rounds = 0

    def agent(self, agent: AgentIdentity, barrier: threading.Barrier) -> None:
        rng = random.Random(agent.id)
        barrier.wait(timeout=30)
        while not self.stop.is_set():
            try:
                got = self.svc.claims.next_user(agent, UNSIGNED, DUAL)
            except ValidationAttemptsExhausted:
                continue  # a 503 with Retry-After: the dashboard asks again
            except BaseException as exc:
                self.errors.append(exc)
                return
            if got is None:
                time.sleep(0.02)  # nobody now; callbacks fall due, populations refill
                continue
            row = got.assignment
            if got.resumed:
                self.errors.append(AssertionError(f"agent {agent.id} resumed {row.id}"))
                return
            self.claims.append((agent.id, row.source, row.user_id))
            time.sleep(rng.uniform(0, 0.01))  # the call
            roll = rng.random()
            try:
                if roll < ABANDON:
                    # The dashboard died: the lease runs out, and the outcome comes late.
                    with self.svc.engine.begin() as conn:
                        conn.execute(LAPSE, {"id": row.id})
                    time.sleep(rng.uniform(0.05, 0.3))
                    try:
                        self.svc.assignments.complete(
                            agent, row.id, Outcome.CALL_BACK, in_an_hour(), None
                        )
                        self.late["accepted"] += 1
                    except Conflict:
                        self.late["refused"] += 1  # someone has had the person since
                elif roll < ABANDON + BOOK:
                    self.svc.assignments.complete(
                        agent, row.id, Outcome.CALL_BACK, in_an_hour(), None
                    )
                else:
                    self.svc.assignments.complete(agent, row.id, Outcome.NO_ANSWER, None, None)
            except BaseException as exc:
                self.errors.append(exc)
                return

    def clock(self, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=30)
        while not self.stop.is_set():
            try:
                with self.svc.engine.begin() as conn:
                    conn.execute(MAKE_DUE)
                self.due_rounds += 1
            except BaseException as exc:
                self.errors.append(exc)
                return
            time.sleep(0.02)

    def populations(self, barrier: threading.Barrier) -> None:
        barrier.wait(timeout=30)
        # The first claims meet the stale entries at the top of the snapshot before the first
        # swap drops them.
        time.sleep(0.3)
        while not self.stop.is_set():
            try:
                self.runs.append(self.svc.population().run(trigger="test", queue=UNSIGNED))
            except BaseException as exc:
                self.errors.append(exc)
                return
            time.sleep(0.1)

    def run(self, seconds: float) -> None:
        helpers: list[Callable[[threading.Barrier], None]] = [self.clock, self.populations]
        barrier = threading.Barrier(len(self.agents) + len(helpers))
        threads = [
            threading.Thread(target=self.agent, args=(a, barrier), daemon=True) for a in self.agents
        ] + [threading.Thread(target=fn, args=(barrier,), daemon=True) for fn in helpers]
        for thread in threads:
            thread.start()
        time.sleep(seconds)
        self.stop.set()
        deadline = time.monotonic() + 60
        for thread in threads:
            thread.join(max(0.1, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "the floor did not stop in time"


def drain(svc: Services, store: Engine, agent: AgentIdentity) -> int:
    """After the floor closes: every open callback is due for anyone and one agent works them
    all (callbacks come first, so the first other hand-out means none is left)."""
    with store.begin() as conn:
        sweep_expired_leases(conn)
    with store.begin() as conn:
        conn.execute(
            text(
                "UPDATE callbacks SET due_at = now() - interval '31 minutes'"
                " WHERE status = 'scheduled'"
            )
        )
        conn.execute(
            text(
                "UPDATE user_call_scores s SET next_call_after = c.due_at FROM callbacks c"
                " WHERE c.user_id = s.user_id AND c.status = 'scheduled'"
            )
        )
    served = 0
    while True:
        got = svc.claims.next_user(agent, UNSIGNED, DUAL)
        if got is None:
            return served
        if got.assignment.source != "callback":
            svc.assignments.release(agent, got.assignment.id, requeue=True, reason="closing")
            return served
        svc.assignments.complete(agent, got.assignment.id, Outcome.NO_ANSWER, None, None)
        served += 1


def test_64_agents_with_callbacks_falling_due_and_populations_one_agent_per_person(
    make_services: Callable[..., Services], store_engine: Engine, replica_engine: Engine
) -> None:
    svc = make_services(
        queue_size_limit=SNAPSHOT,
        # The caps are SPEC 7.3's business and would cancel callbacks here; out of the way.
        max_attempts_per_day=1000,
        max_attempts_per_week=10_000,
        **POOL,
    )
    seed(replica_engine, store_engine, range(1, STALE + 1), score=0)
    seed(replica_engine, store_engine, range(STALE + 1, USERS + 1), score=lambda u: 1 + u % 9)
    populate(svc, SNAPSHOT)
    owners = make_agents(store_engine, STALE, prefix="away")  # they do not work the floor
    stale = set_up_stale_entries(svc, store_engine, owners)

    floor = Floor(svc, make_agents(store_engine, AGENTS))
    floor.run(RUN_SECONDS)
    assert floor.errors == [], floor.errors[:3]
    [closer] = make_agents(store_engine, 1, prefix="closer")
    drained = drain(svc, store_engine, closer)

    ledger = all_rows(
        store_engine,
        "SELECT id, agent_id, user_id, source, queue_entry_id, callback_id, status, outcome,"
        " assigned_at, lease_expires_at, finished_at FROM assignments ORDER BY assigned_at, id",
    )
    callbacks = all_rows(store_engine, "SELECT * FROM callbacks ORDER BY created_at, id")
    by_user: dict[int, list[Any]] = defaultdict(list)
    for row in ledger:
        by_user[row.user_id].append(row)

    # The floor was busy in every way that matters here.
    sources = Counter(row.source for row in ledger)
    assert sources["queue"] > 0 and sources["direct"] > 0 and sources["callback"] > 0, sources
    assert sources["callback"] >= 50, sources
    assert floor.due_rounds > 10
    swaps = [r for r in floor.runs if r.queues[UNSIGNED].status == "succeeded"]
    assert len(swaps) == len(floor.runs) and len(swaps) >= 2, [
        r.queues[UNSIGNED] for r in floor.runs
    ]
    assert sum(floor.late.values()) > 0, "no lease ran out"

    # 1. Nobody is held any more, and no person was ever held twice at once (all sources).
    assert [row for row in ledger if row.status == "active"] == []
    for rows in by_user.values():
        for before, after in itertools.pairwise(rows):
            assert before.finished_at is not None, brief(before)
            assert held_until(before) <= after.assigned_at, (brief(before), brief(after))

    # 2. Never a queue entry or a direct-mode hold of a person while their callback was open
    # (from its booking to its end), other than the call that booked it.
    for cb in callbacks:
        for row in by_user[cb.user_id]:
            if row.source == "callback" or row.id == cb.booked_by_assignment_id:
                continue
            overlap = row.assigned_at < (cb.finished_at or FOREVER) and cb.created_at < (
                held_until(row)
            )
            assert not overlap, ("handed out while its callback was open", cb, brief(row))

    # 3. Each callback: at most one hand-out at a time (above), completed exactly once by the
    # hand-out it names, and none left open. Nothing cancels one here but a rebooking.
    hand_outs: dict[Any, list[Any]] = defaultdict(list)
    for row in ledger:
        if row.callback_id is not None:
            hand_outs[row.callback_id].append(row)
    assert {row.source for rows in hand_outs.values() for row in rows} == {"callback"}
    for cb in callbacks:
        served = hand_outs.get(cb.id, [])
        completed = [row for row in served if row.status == "completed"]
        assert {row.status for row in served} <= {"completed", "expired"}, (cb, served)
        assert all(row.user_id == cb.user_id for row in served)
        if cb.status == "completed":
            assert [row.id for row in completed] == [cb.assignment_id], (cb, served)
            assert cb.first_handed_out_at == served[0].assigned_at
        else:
            assert (cb.status, cb.cancel_reason) == ("cancelled", "rebooked"), cb
            assert completed == [], (cb, served)
    assert Counter(cb.status for cb in callbacks)["completed"] >= sources["callback"] // 2
    assert drained >= STALE  # the closer kept (at least) the stale promises

    # 4. The stale entries were met by claims and refused for their open callback; each
    # promise was then kept by one hand-out, after the floor closed.
    refused = all_rows(
        store_engine,
        "SELECT user_id FROM entry_invalidations"
        " WHERE source = 'queue' AND reason = 'callback_booked'",
    )
    assert stale <= {r.user_id for r in refused}, "no claim met the stale entries"
    for user in stale:
        booking, *later = by_user[user]
        assert (booking.source, booking.status, booking.outcome) == (
            "queue",
            "completed",
            "call_back",
        )
        assert [(row.source, row.agent_id, row.status) for row in later] == [
            ("callback", closer.id, "completed")
        ], later
