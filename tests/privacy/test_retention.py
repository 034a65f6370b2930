"""Retention (SPEC 8.3), with the clock controlled by placing rows at known distances from the
database's now(): notes cleared and ledger rows deleted exactly past their limits, the
compliance report answering the same for a day whose rows are gone, and a run beside 16
claiming agents costing them nothing."""

from __future__ import annotations

import itertools
import threading
import uuid
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Engine, text

from app.privacy.retention import Retention
from app.queues.kinds import QueueType
from app.rules.calling import load_calling_rules
from app.rules.compliance import compliance_report
from app.services import Services
from tests.factories import new_agent
from tests.queues.test_claims import (
    Tracker,
    assert_no_overlap_per_agent,
    make_agents,
    populate,
    run_agents,
    seed,
)

NOTES_DAYS = 30
LEDGER_DAYS = 60
MARGIN = "5 minutes"

# One finished assignment per row of :ages (an interval before now() that it finished), with
# notes, a release reason and details; its user is the row's position.
FINISHED = """
INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score, status,
                         assigned_at, lease_expires_at, finished_at, outcome, notes,
                         release_reason, details, created_at, updated_at)
SELECT :agent, :base + n, 'unsigned_users', 'queue', 5, :status, f - interval '3 minutes',
       f + interval '12 minutes', f, :outcome, 'said to ring after six', :reason,
       '{"dialled": "+44 7700 900123"}', f - interval '3 minutes', f
  FROM unnest(CAST(:ages AS interval[])) WITH ORDINALITY AS a(age, n),
       LATERAL (SELECT now() - a.age) AS t(f)
RETURNING user_id, finished_at
"""


_USERS = itertools.count(9000, 100)


def agent(store: Engine) -> int:
    return new_agent(store, f"retention-{uuid.uuid4().hex[:8]}").id


def finished(store: Engine, ages: list[str], *, status: str = "completed") -> dict[str, int]:
    """Rows that finished ``ages`` ago (PostgreSQL intervals); their user ids, by age."""
    outcome, reason = ("no_answer", None) if status == "completed" else (None, "wrong number")
    with store.begin() as conn:
        rows = conn.execute(
            text(FINISHED),
            {
                "agent": agent(store),
                "status": status,
                "outcome": outcome,
                "reason": reason,
                "ages": ages,
                "base": next(_USERS),
            },
        ).all()
    return {age: row.user_id for age, row in zip(ages, rows, strict=True)}


def notes_of(store: Engine, user_id: int) -> tuple[Any, ...]:
    with store.connect() as conn:
        return tuple(
            conn.execute(
                text("SELECT notes, release_reason, details FROM assignments WHERE user_id = :u"),
                {"u": user_id},
            ).one()
        )


def test_notes_are_cleared_exactly_past_their_limit(
    make_services: Callable[..., Services], store_engine: Engine
) -> None:
    services = make_services(retention_notes_days=NOTES_DAYS, retention_ledger_days=0)
    store = services.engine
    past = f"{NOTES_DAYS} days {MARGIN}"
    within = f"{NOTES_DAYS - 1} days 23 hours 55 minutes"
    users = finished(store, [past, within])
    released = finished(store, [past], status="released")

    dry = Retention(store, services.settings).run(dry_run=True)
    assert dry.notes_cleared == 2
    assert notes_of(store, users[past])[0] is not None  # a dry run changes nothing

    report = Retention(store, services.settings).run()
    assert report.notes_cleared == 2
    assert notes_of(store, users[past]) == (None, None, {})
    assert notes_of(store, released[past]) == (None, None, {})
    kept = notes_of(store, users[within])
    assert kept[0] == "said to ring after six" and kept[2] == {"dialled": "+44 7700 900123"}
    # Nothing is deleted when the ledger is kept forever, and a second run reads nothing new.
    with store.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM assignments")).scalar_one() == 3
    assert Retention(store, services.settings).run().notes_cleared == 0


def old_day(store: Engine, agent_id: int) -> None:
    """A busy day LEDGER_DAYS + 10 days ago, with something for every column of the report:
    hand-outs (one outside hours, users over the caps), refusals, and callbacks booked, kept,
    late, overdue and cancelled."""
    with store.begin() as conn:
        conn.execute(
            text(
                """
                WITH day AS (SELECT date_trunc('day', now()) - make_interval(days => :age)
                                    + interval '12 hours' AS noon)
                INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score,
                                         status, assigned_at, lease_expires_at, finished_at,
                                         outcome, notes, created_at, updated_at)
                SELECT :agent, 7000 + g % 4, 'unsigned_users',
                       'queue', 5, 'completed',
                       t, t + interval '15 minutes', t + interval '2 minutes', 'no_answer',
                       'notes ' || g, t, t + interval '2 minutes'
                  FROM day, generate_series(1, 40) AS g,
                       LATERAL (SELECT noon + make_interval(mins => g * 10)
                                       - CASE WHEN g = 40 THEN interval '13 hours'
                                              ELSE interval '0' END) AS x(t)
                """
            ),
            {"agent": agent_id, "age": LEDGER_DAYS + 10},
        )
        conn.execute(
            text(
                """
                WITH day AS (SELECT date_trunc('day', now()) - make_interval(days => :age)
                                    + interval '12 hours' AS noon)
                INSERT INTO entry_invalidations (queue_type, source, entry_id, user_id, reason,
                                                 created_at)
                SELECT 'unsigned_users', 'queue', gen_random_uuid(), 7100 + g,
                       (ARRAY['suppressed', 'attempt_cap', 'reclassified'])[1 + g % 3],
                       noon + make_interval(mins => g)
                  FROM day, generate_series(1, 9) AS g
                """
            ),
            {"age": LEDGER_DAYS + 10},
        )
        conn.execute(
            text(
                """
                WITH day AS (SELECT date_trunc('day', now()) - make_interval(days => :age)
                                    + interval '12 hours' AS noon)
                INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id, status,
                                       first_handed_out_at, finished_at, created_at, updated_at)
                SELECT 7200 + g, 'unsigned_users', noon, :agent, s.status,
                       noon + s.late, noon + interval '2 hours', noon - interval '1 hour',
                       noon + interval '2 hours'
                  FROM day, generate_series(1, 3) AS g,
                       (VALUES ('completed', interval '5 minutes'),
                               ('completed', interval '90 minutes'),
                               ('cancelled', NULL::interval)) AS s(status, late)
                UNION ALL
                SELECT 7300, 'unsigned_users', noon, :agent, 'scheduled', NULL, NULL,
                       noon - interval '3 hours', noon FROM day
                """
            ),
            {"agent": agent_id, "age": LEDGER_DAYS + 10},
        )
        conn.execute(
            text(
                """
                INSERT INTO queue_transitions (user_id, from_queue_type, to_queue_type, reason,
                                               source, created_at)
                SELECT 7000, 'outstanding_requests', 'unsigned_users', 'signature removed',
                       'discovery', now() - make_interval(days => :age)
                """
            ),
            {"age": LEDGER_DAYS + 10},
        )


def figures_of(report: dict[str, Any]) -> tuple[Any, Any]:
    return report["days"], report["totals"]


def test_old_rows_go_and_the_report_for_their_day_is_the_same(
    make_services: Callable[..., Services], store_engine: Engine
) -> None:
    services = make_services(
        retention_notes_days=NOTES_DAYS,
        retention_ledger_days=LEDGER_DAYS,
        max_attempts_per_day=3,
        max_attempts_per_week=8,
        calling_hours="mon-sun 08:00-21:00",
        calling_timezone="UTC",
    )
    store = services.engine
    old_day(store, agent(store))
    past = f"{LEDGER_DAYS} days {MARGIN}"
    within = f"{LEDGER_DAYS - 1} days 23 hours 55 minutes"
    edge = finished(store, [past, within])
    with store.connect() as conn:
        zone = load_calling_rules(conn, services.settings).zone
        day = conn.execute(
            text("SELECT (now() - make_interval(days => :age))::date"), {"age": LEDGER_DAYS + 10}
        ).scalar_one()
        assert isinstance(day, date)
        window = (day.replace(day=1), day)
        before = figures_of(compliance_report(conn, services.settings, *window))
    figures = next(d for d in before[0] if d["date"] == day.isoformat())
    # Every column has something to lose.
    assert all(figures[c] > 0 for c in figures if c != "date"), figures
    assert zone is not None

    report = Retention(store, services.settings).run()

    # Notes are cleared on the row kept (the ledger pass deletes the older ones, notes and all).
    assert report.notes_cleared == 1
    assert report.deleted["assignments"] == 41  # the day's 40 and the one just past the limit
    assert report.deleted["entry_invalidations"] == 9
    assert report.deleted["callbacks"] == 9  # completed and cancelled; the open one stays
    assert report.deleted["queue_transitions"] == 1
    assert report.days_kept > 0
    with store.connect() as conn:
        after = figures_of(compliance_report(conn, services.settings, *window))
        left = conn.execute(
            text("SELECT user_id FROM assignments WHERE user_id = ANY(:u) ORDER BY user_id"),
            {"u": list(edge.values())},
        ).scalars()
        assert list(left) == [edge[within]]
        assert conn.execute(text("SELECT count(*) FROM callbacks")).scalar_one() == 1
    assert after == before
    # A second run finds nothing, and the report still agrees.
    again = Retention(store, services.settings).run()
    assert set(again.deleted.values()) == {0}
    with store.connect() as conn:
        assert figures_of(compliance_report(conn, services.settings, *window)) == before


def test_retention_beside_16_claiming_agents_costs_them_nothing(
    make_services: Callable[..., Services], store_engine: Engine, replica_engine: Engine
) -> None:
    """16 agents drain a queue while retention clears and deletes, in small batches, rows of
    the same people (the attempt caps read them): no error, no duplicate, nobody told "empty"
    early, and every expired row gone at the end."""
    size = 240
    services = make_services(
        queue_size_limit=1000,
        retention_notes_days=NOTES_DAYS,
        retention_ledger_days=LEDGER_DAYS,
        db_pool_size=20,
        db_max_overflow=4,
    )
    seed(replica_engine, store_engine, range(1, size + 1), score=lambda uid: uid % 5)
    populate(services, size)
    with store_engine.begin() as conn:
        old = conn.execute(
            text(
                """
                INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score,
                                         status, assigned_at, lease_expires_at, finished_at,
                                         outcome, notes, created_at, updated_at)
                SELECT :agent, 1 + g % :users, 'unsigned_users', 'queue', 5, 'completed', t,
                       t + interval '15 minutes', t + interval '2 minutes', 'no_answer',
                       'old notes', t, t
                  FROM generate_series(1, 6000) AS g,
                       LATERAL (SELECT now() - make_interval(days => :notes + g % 60,
                                                             mins => g)) AS x(t)
                """
            ),
            {"agent": agent(store_engine), "users": size, "notes": NOTES_DAYS},
        ).rowcount
    assert old == 6000
    agents = make_agents(store_engine, 16)
    tracker = Tracker(total=size)
    runs: list[Any] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def retention(barrier: threading.Barrier) -> None:
        barrier.wait(timeout=30)
        try:
            while not stop.is_set():
                runs.append(Retention(services.engine, services.settings, batch=100).run())
        except BaseException as exc:
            failures.append(exc)

    run_agents(
        services,
        agents,
        QueueType.UNSIGNED_USERS,
        services.flags(),
        tracker,
        extra=(retention,),
        after_agents=stop.set,
    )

    assert failures == []
    assert tracker.errors == []
    assert tracker.early_empty == []
    assert tracker.handed == size
    assert runs and sum(r.notes_cleared for r in runs) > 0
    Retention(services.engine, services.settings).run()  # whatever the last run left
    with store_engine.connect() as conn:
        rows = [
            dict(r)
            for r in conn.execute(
                text("SELECT * FROM assignments WHERE agent_id = ANY(:a)"),
                {"a": [a.id for a in agents]},
            ).mappings()
        ]
        expired = conn.execute(
            text(
                "SELECT count(*) FROM assignments"
                " WHERE finished_at < now() - make_interval(days => :d)"
            ),
            {"d": LEDGER_DAYS},
        ).scalar_one()
        with_notes = conn.execute(
            text(
                "SELECT count(*) FROM assignments WHERE notes IS NOT NULL"
                " AND finished_at < now() - make_interval(days => :d)"
            ),
            {"d": NOTES_DAYS},
        ).scalar_one()
    assert (expired, with_notes) == (0, 0)
    assert len(rows) == size
    assert len({r["user_id"] for r in rows}) == size
    assert len({r["queue_entry_id"] for r in rows}) == size
    assert {r["status"] for r in rows} == {"completed"}
    assert_no_overlap_per_agent(rows)


def test_final_days_are_kept_and_the_report_answers_the_same_from_them(
    make_services: Callable[..., Services], store_engine: Engine
) -> None:
    """Each run keeps the figures of every day that can no longer change, and the report reads
    them instead of the ledger; a day with a callback still waiting is counted live until it is
    handed out."""
    services = make_services(
        retention_notes_days=NOTES_DAYS,
        retention_ledger_days=0,
        max_attempts_per_day=3,
        max_attempts_per_week=8,
        calling_hours="mon-sun 08:00-21:00",
        calling_timezone="UTC",
    )
    store = services.engine
    old_day(store, agent(store))  # its callback for user 7300 is still waiting
    finished(store, ["20 days", "3 days"])
    with store.connect() as conn:
        today, waiting = conn.execute(
            text("SELECT now()::date, (now() - make_interval(days => :age))::date"),
            {"age": LEDGER_DAYS + 10},
        ).one()

    def report() -> tuple[Any, Any]:
        with store.connect() as conn:
            return figures_of(
                compliance_report(conn, services.settings, waiting - timedelta(days=2), today)
            )

    def kept() -> set[date]:
        with store.connect() as conn:
            return set(conn.execute(text("SELECT day FROM compliance_days")).scalars())

    before = report()
    assert Retention(store, services.settings).run().days_kept > 0
    assert waiting not in kept() and today not in kept()
    assert today - timedelta(days=1) in kept() and today - timedelta(days=20) in kept()
    assert report() == before

    # The waiting callback is handed out, late: its day's figures change, counted live, and the
    # next run keeps them.
    with store.begin() as conn:
        conn.execute(
            text(
                "UPDATE callbacks SET status = 'completed', first_handed_out_at = now(),"
                " finished_at = now() WHERE user_id = 7300"
            )
        )
    moved = report()
    day = next(d for d in moved[0] if d["date"] == waiting.isoformat())
    was = next(d for d in before[0] if d["date"] == waiting.isoformat())
    assert (day["callbacks_overdue"], day["callbacks_late"]) == (
        was["callbacks_overdue"] - 1,
        was["callbacks_late"] + 1,
    )
    assert Retention(store, services.settings).run().days_kept == 1
    assert waiting in kept()
    assert report() == moved
