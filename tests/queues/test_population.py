"""Population of the two queues (SPEC 3.2) and its figures (SPEC 4.1), read back with SQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.engine import make_url

from app.queues.kinds import QueueType
from app.queues.population import QueueReport, RunReport
from app.services import Services
from tests.factories import Replica, add_scores
from tests.proxy import FaultProxy

UNSIGNED = "unsigned_users"
OUTSTANDING = "outstanding_requests"
UQ = "unsigned_users_queue"
OQ = "outstanding_requests_queue"

T0 = datetime(2025, 2, 1, 8, 0, 0, tzinfo=UTC)
T1 = datetime(2025, 2, 2, 8, 0, 0, tzinfo=UTC)
T2 = datetime(2025, 2, 3, 8, 0, 0, tzinfo=UTC)


# -- helpers -----------------------------------------------------------------------------------


def query(engine: Engine, sql: str, **params: Any) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        return [dict(row._mapping) for row in conn.execute(text(sql), params)]


def pending_order(engine: Engine, table: str) -> list[tuple[int, int]]:
    """(queue_position, user_id) of the pending entries, in serving order."""
    return [
        (r["queue_position"], r["user_id"])
        for r in query(
            engine,
            f"SELECT queue_position, user_id FROM {table} WHERE status = 'pending'"
            " ORDER BY queue_position, user_id",
        )
    ]


def whole_table(engine: Engine, table: str) -> list[dict[str, Any]]:
    order = "user_id" if table == "user_call_scores" else "id"
    return query(engine, f"SELECT * FROM {table} ORDER BY {order}")


def queue_types(engine: Engine) -> dict[int, str | None]:
    return {
        r["user_id"]: r["current_queue_type"]
        for r in query(engine, "SELECT user_id, current_queue_type FROM user_call_scores")
    }


def transitions(engine: Engine) -> list[tuple[Any, ...]]:
    return [
        (r["user_id"], r["from_queue_type"], r["to_queue_type"], r["reason"], r["source"])
        for r in query(
            engine,
            "SELECT user_id, from_queue_type, to_queue_type, reason, source"
            " FROM queue_transitions ORDER BY user_id, id",
        )
    ]


def figures(report: QueueReport) -> dict[str, Any]:
    """The report of one queue without its timing."""
    values = asdict(report)
    del values["duration_ms"]
    return values


def expect(
    status: str = "succeeded",
    *,
    eligible: int = 0,
    invalid: int = 0,
    populated: int = 0,
    removed: int = 0,
    kept_assigned: int = 0,
    error: str | None = None,
) -> dict[str, Any]:
    return {
        "status": status,
        "eligible": eligible,
        "invalid": invalid,
        "populated": populated,
        "removed": removed,
        "kept_assigned": kept_assigned,
        "error": error,
    }


SKIPPED = expect("skipped")


def run(services: Services, **kw: Any) -> RunReport:
    return services.population().run(trigger="test", **kw)


def add_agent(engine: Engine, name: str) -> int:
    with engine.begin() as conn:
        return conn.execute(
            text("INSERT INTO agents (name, display_name) VALUES (:n, :n) RETURNING id"),
            {"n": name},
        ).scalar_one()


def add_assignment(
    engine: Engine,
    agent_id: int,
    user_id: int,
    *,
    lease: timedelta,
    status: str = "active",
    queue_type: str = UNSIGNED,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score,"
                " status, lease_expires_at)"
                " VALUES (:agent, :user, :queue_type, 'direct', 0, :status, now() + :lease)"
            ),
            {
                "agent": agent_id,
                "user": user_id,
                "queue_type": queue_type,
                "status": status,
                "lease": lease,
            },
        )


def unsigned_leads(replica: Replica, store: Engine, scores: dict[int, int], **kw: Any) -> None:
    for user_id in scores:
        replica.unsigned(user_id)
    add_scores(
        store,
        [
            {"user_id": uid, "current_score": score, "current_queue_type": UNSIGNED, **kw}
            for uid, score in scores.items()
        ],
    )


# -- candidates and order ----------------------------------------------------------------------


def test_serving_order_is_score_then_freshest_then_user_id(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    created = {
        31: now - timedelta(days=1),
        24: now - timedelta(days=1),
        10: now - timedelta(days=3),
    }
    created |= {5: now - timedelta(days=5), 2: now - timedelta(days=1), 7: now - timedelta(days=2)}
    scores = {31: 0, 24: 0, 10: 0, 5: 3, 2: 12, 7: 3}
    for uid in scores:
        replica.unsigned(uid)
    add_scores(
        store_engine,
        [
            {
                "user_id": uid,
                "current_score": s,
                "current_queue_type": UNSIGNED,
                "created_at": created[uid],
            }
            for uid, s in scores.items()
        ],
    )

    report = run(services)

    # Score 0: the two freshest (same created_at, so user_id 24 before 31), then the older 10;
    # score 3: user 7 (2 days old) before user 5 (5 days old); then score 12.
    assert pending_order(store_engine, UQ) == [(1, 24), (2, 31), (3, 10), (4, 7), (5, 5), (6, 2)]
    assert [
        r["priority_score"]
        for r in query(store_engine, f"SELECT priority_score FROM {UQ} ORDER BY queue_position")
    ] == [0, 0, 0, 3, 3, 12]
    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == expect(eligible=6, populated=6)
    assert figures(report.queues[QueueType.OUTSTANDING_REQUESTS]) == expect()


@pytest.mark.parametrize(
    ("cooling", "expected"),
    [(120, [(1, 3), (2, 4)]), (0, [(1, 1), (2, 2), (3, 3), (4, 4)])],
    ids=["120-minutes", "disabled"],
)
def test_cooling_period_leaves_out_fresh_leads(
    make_services: Callable[..., Services],
    replica: Replica,
    store_engine: Engine,
    cooling: int,
    expected: list[tuple[int, int]],
) -> None:
    now = datetime.now(UTC)
    ages = {1: timedelta(seconds=5), 2: timedelta(minutes=119), 3: timedelta(minutes=121)}
    ages[4] = timedelta(days=2)
    for uid in ages:
        replica.unsigned(uid)
    add_scores(
        store_engine,
        [
            {"user_id": uid, "current_queue_type": UNSIGNED, "created_at": now - age}
            for uid, age in ages.items()
        ],
    )

    report = run(make_services(cooling_period_minutes=cooling))

    assert pending_order(store_engine, UQ) == expected
    assert report.queues[QueueType.UNSIGNED_USERS].eligible == len(expected)


def test_next_call_after_in_the_future_is_left_out(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    now = datetime.now(UTC)
    for uid in (1, 2, 3):
        replica.unsigned(uid)
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": UNSIGNED, "next_call_after": None},
            {
                "user_id": 2,
                "current_queue_type": UNSIGNED,
                "next_call_after": now + timedelta(hours=1),
            },
            {
                "user_id": 3,
                "current_queue_type": UNSIGNED,
                "next_call_after": now - timedelta(minutes=1),
            },
        ],
    )

    report = run(services)

    assert pending_order(store_engine, UQ) == [(1, 1), (2, 3)]
    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == expect(eligible=2, populated=2)


def test_inactive_leads_are_never_queued_nor_reclassified(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    replica.unsigned(2)
    replica.user(3)  # no claim: would be reclassified if it were a candidate
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_queue_type": UNSIGNED},
            {"user_id": 2, "current_queue_type": UNSIGNED, "is_active": False},
            {"user_id": 3, "current_queue_type": UNSIGNED, "is_active": False},
        ],
    )

    report = run(services)

    assert pending_order(store_engine, UQ) == [(1, 1)]
    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == expect(eligible=1, populated=1)
    assert queue_types(store_engine) == {1: UNSIGNED, 2: UNSIGNED, 3: UNSIGNED}
    assert transitions(store_engine) == []


def test_queue_size_limit_keeps_the_first_in_order(
    make_services: Callable[..., Services], replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {1: 9, 2: 4, 3: 0, 4: 7, 5: 2})

    report = run(make_services(queue_size_limit=3))

    assert pending_order(store_engine, UQ) == [(1, 3), (2, 5), (3, 2)]
    unsigned = report.queues[QueueType.UNSIGNED_USERS]
    assert (unsigned.status, unsigned.populated, unsigned.invalid) == ("succeeded", 3, 0)
    # The walk may classify a batch beyond the limit (SPEC 4.1), never fewer than it keeps.
    assert 3 <= unsigned.eligible <= 5


def test_lead_with_an_active_assignment_is_left_out(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {1: 0, 2: 1, 3: 2, 4: 3})
    add_assignment(store_engine, add_agent(store_engine, "a"), 2, lease=timedelta(minutes=10))
    # An assignment whose lease ran out is not active: user 3 is queued again.
    add_assignment(store_engine, add_agent(store_engine, "b"), 3, lease=timedelta(minutes=-1))
    # A finished assignment does not hold the user either.
    add_assignment(
        store_engine,
        add_agent(store_engine, "c"),
        4,
        lease=timedelta(minutes=10),
        status="completed",
    )

    report = run(services)

    assert pending_order(store_engine, UQ) == [(1, 1), (2, 3), (3, 4)]
    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == expect(eligible=3, populated=3)
    assert queue_types(store_engine)[2] == UNSIGNED
    assert transitions(store_engine) == []


# -- reclassification --------------------------------------------------------------------------


def test_candidates_that_no_longer_belong_are_reclassified_with_audit_rows(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)  # still unsigned
    replica.outstanding(2, "payslip")  # signed, owes a document
    replica.user(3, signed=True)  # signed, nothing owed
    replica.claim(3)
    replica.user(4, enabled=False, signed=False)
    replica.claim(4)
    replica.user(5, signed=False)  # every claim cancelled
    replica.claim(5, status="CANCELLED")
    add_scores(
        store_engine,
        [{"user_id": uid, "current_queue_type": UNSIGNED} for uid in (1, 2, 3, 4, 5)],
    )

    report = run(services, queue=QueueType.UNSIGNED_USERS)

    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == expect(
        eligible=5, invalid=4, populated=1
    )
    assert figures(report.queues[QueueType.OUTSTANDING_REQUESTS]) == SKIPPED
    assert pending_order(store_engine, UQ) == [(1, 1)]
    assert queue_types(store_engine) == {1: UNSIGNED, 2: OUTSTANDING, 3: None, 4: None, 5: None}
    rows = query(
        store_engine,
        "SELECT user_id, from_queue_type, to_queue_type, reason, source, agent_id, run_id"
        " FROM queue_transitions ORDER BY user_id",
    )
    assert [tuple(r.values()) for r in rows] == [
        (2, UNSIGNED, OUTSTANDING, "pending_requirements", "population", None, report.run_id),
        (3, UNSIGNED, None, "nothing_outstanding", "population", None, report.run_id),
        (4, UNSIGNED, None, "user_disabled", "population", None, report.run_id),
        (5, UNSIGNED, None, "no_open_claim", "population", None, report.run_id),
    ]
    checked = query(
        store_engine,
        "SELECT user_id FROM user_call_scores WHERE last_queue_check IS NOT NULL ORDER BY user_id",
    )
    assert [r["user_id"] for r in checked] == [2, 3, 4, 5]

    # The moved lead is an outstanding_requests candidate from the next population on.
    run(services, queue=QueueType.OUTSTANDING_REQUESTS)
    assert pending_order(store_engine, OQ) == [(1, 2)]
    assert pending_order(store_engine, UQ) == [(1, 1)]


def test_outstanding_candidate_who_lost_the_signature_moves_to_unsigned(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    replica.outstanding(1, "payslip")
    replica.unsigned(2)
    add_scores(
        store_engine,
        [{"user_id": uid, "current_queue_type": OUTSTANDING} for uid in (1, 2)],
    )

    report = run(services, queue=QueueType.OUTSTANDING_REQUESTS)

    assert figures(report.queues[QueueType.OUTSTANDING_REQUESTS]) == expect(
        eligible=2, invalid=1, populated=1
    )
    assert pending_order(store_engine, OQ) == [(1, 1)]
    assert queue_types(store_engine) == {1: OUTSTANDING, 2: UNSIGNED}
    assert transitions(store_engine) == [
        (2, OUTSTANDING, UNSIGNED, "missing_signature", "population")
    ]


# -- entry fields ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("score", "band"),
    [
        (0, "New lead"),
        (1, "High priority"),
        (5, "High priority"),
        (6, "Medium priority"),
        (10, "Medium priority"),
        (11, "Aged lead"),
        (200, "Aged lead"),
    ],
)
def test_queue_reason_follows_the_score_band(
    services: Services, replica: Replica, store_engine: Engine, score: int, band: str
) -> None:
    replica.unsigned(1)
    replica.outstanding(2)
    add_scores(
        store_engine,
        [
            {"user_id": 1, "current_score": score, "current_queue_type": UNSIGNED},
            {"user_id": 2, "current_score": score, "current_queue_type": OUTSTANDING},
        ],
    )

    run(services)

    assert query(store_engine, f"SELECT priority_score, queue_reason FROM {UQ}") == [
        {"priority_score": score, "queue_reason": f"{band} - Missing signature"}
    ]
    assert query(store_engine, f"SELECT priority_score, queue_reason FROM {OQ}") == [
        {"priority_score": score, "queue_reason": f"{band} - Outstanding requirements"}
    ]


def test_every_field_of_an_unsigned_entry(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    signup = datetime(2024, 12, 24, 15, 30, 5, tzinfo=UTC)
    replica.user(41, signed=False, created_at=signup)
    replica.claim(41, status="Cancelled", created_at=T0, claim_id=900)
    replica.claim(41, status="open", created_at=T2, claim_id=901)
    replica.claim(41, status="OPEN", created_at=T1, claim_id=903)
    replica.claim(41, status="open", created_at=T1, claim_id=902)
    add_scores(store_engine, [{"user_id": 41, "current_score": 4, "current_queue_type": UNSIGNED}])

    report = run(services)

    [entry] = query(store_engine, f"SELECT * FROM {UQ}")
    assert entry["id"] is not None
    assert entry["created_at"] is not None and entry["updated_at"] is not None
    assert {k: entry[k] for k in entry if k not in ("id", "created_at", "updated_at")} == {
        "user_id": 41,
        "claim_id": 902,  # oldest open claim: T1, lowest id
        "priority_score": 4,
        "queue_position": 1,
        "status": "pending",
        "queue_reason": "High priority - Missing signature",
        "available_from": report.started_at,
        "assigned_to_agent": None,
        "assigned_at": None,
        "invalid_reason": None,
        "put_back": False,
        "signature_missing_since": signup,
        "signature_type": "initial",
    }


def test_every_field_of_an_outstanding_entry(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    replica.user(42, signed=True)
    first = replica.claim(42, status="open", created_at=T0, claim_id=800)
    second = replica.claim(42, status="Active", created_at=T1, claim_id=801)
    cancelled = replica.claim(42, status="CANCELLED", created_at=T0, claim_id=802)
    replica.requirement(
        first, "proof_of_address", status="PENDING", created_at=T2, requirement_id=1
    )
    replica.requirement(second, "payslip", status="pending", created_at=T1, requirement_id=3)
    replica.requirement(second, "bank_statement", status="Pending", created_at=T1, requirement_id=2)
    replica.requirement(first, "payslip", status="pending", created_at=T2, requirement_id=4)
    replica.requirement(first, "council_tax", status="Completed", created_at=T0, requirement_id=5)
    replica.requirement(first, "utility_bill", status="rejected", created_at=T0, requirement_id=6)
    replica.requirement(first, "cfa", status="pending", created_at=T0, requirement_id=7)
    replica.requirement(
        first,
        "id_document",
        status="pending",
        reason="base requirement for claim.",
        created_at=T0,
        requirement_id=8,
    )
    replica.requirement(cancelled, "tax_return", status="pending", created_at=T0, requirement_id=9)
    add_scores(
        store_engine, [{"user_id": 42, "current_score": 15, "current_queue_type": OUTSTANDING}]
    )

    report = run(services)

    [entry] = query(store_engine, f"SELECT * FROM {OQ}")
    assert {k: entry[k] for k in entry if k not in ("id", "created_at", "updated_at")} == {
        "user_id": 42,
        "claim_id": 801,  # the oldest valid pending requirement (T1, id 2) is on claim 801
        "priority_score": 15,
        "queue_position": 1,
        "status": "pending",
        "queue_reason": "Aged lead - Outstanding requirements",
        "available_from": report.started_at,
        "assigned_to_agent": None,
        "assigned_at": None,
        "invalid_reason": None,
        "put_back": False,
        "requirement_types": ["bank_statement", "payslip", "proof_of_address"],
        "total_requirements": 6,
        "pending_requirements": 4,
        "completed_requirements": 1,
        "oldest_requirement_date": T1,
    }
    assert query(store_engine, f"SELECT jsonb_typeof(requirement_types) AS t FROM {OQ}") == [
        {"t": "array"}
    ]


# -- refresh -----------------------------------------------------------------------------------


def test_repopulation_replaces_the_snapshot_and_keeps_live_calls(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {1: 1, 2: 2, 3: 3, 4: 4})
    first = run(services)
    assert pending_order(store_engine, UQ) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    old = {r["user_id"]: r["id"] for r in query(store_engine, f"SELECT user_id, id FROM {UQ}")}

    # User 1's call finished; user 2 is on a live call; upstream rescored 3 and 4.
    agent = add_agent(store_engine, "a")
    add_assignment(store_engine, agent, 2, lease=timedelta(minutes=10))
    with store_engine.begin() as conn:
        conn.execute(text(f"UPDATE {UQ} SET status = 'completed' WHERE user_id = 1"))
        conn.execute(
            text(
                f"UPDATE {UQ} SET status = 'assigned', assigned_to_agent = :a,"
                " assigned_at = now() WHERE user_id = 2"
            ),
            {"a": agent},
        )
        conn.execute(
            text(
                "UPDATE user_call_scores SET current_score = CASE user_id"
                " WHEN 1 THEN 7 WHEN 3 THEN 1 WHEN 4 THEN 0 END WHERE user_id IN (1, 3, 4)"
            )
        )

    second = run(services)

    assert figures(second.queues[QueueType.UNSIGNED_USERS]) == expect(
        eligible=3, populated=3, removed=3, kept_assigned=1
    )
    rows = query(
        store_engine,
        f"SELECT id, user_id, queue_position, status, priority_score, available_from FROM {UQ}"
        " ORDER BY status, queue_position",
    )
    assert [
        (r["user_id"], r["queue_position"], r["status"], r["priority_score"]) for r in rows
    ] == [
        (2, 2, "assigned", 2),
        (4, 1, "pending", 0),
        (3, 2, "pending", 1),
        (1, 3, "pending", 7),
    ]
    by_user = {r["user_id"]: r for r in rows}
    assert by_user[2]["id"] == old[2]
    assert by_user[2]["available_from"] == first.started_at
    for uid in (1, 3, 4):
        assert by_user[uid]["id"] != old[uid]
        assert by_user[uid]["available_from"] == second.started_at
    assert second.started_at > first.started_at


# -- re-check of leads with no queue type ------------------------------------------------------


def test_recheck_moves_unclassified_leads_oldest_check_first(
    make_services: Callable[..., Services], replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    replica.outstanding(2, "payslip")
    replica.user(3)  # still nothing to do
    replica.unsigned(4)
    replica.unsigned(5)
    add_scores(store_engine, [{"user_id": uid} for uid in (1, 2, 3, 4)])
    add_scores(store_engine, [{"user_id": 5, "is_active": False}])
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE user_call_scores SET last_queue_check = CASE user_id"
                " WHEN 2 THEN :old WHEN 3 THEN :older WHEN 4 THEN :newest END"
                " WHERE user_id IN (2, 3, 4)"
            ),
            {"older": T0, "old": T1, "newest": T2},
        )

    services = make_services(recheck_batch=3)
    report = run(services)

    # Batch of 3, oldest check first: 1 (never checked), 3 (T0), 2 (T1); 4 (T2) waits.
    assert queue_types(store_engine) == {1: UNSIGNED, 2: OUTSTANDING, 3: None, 4: None, 5: None}
    rows = query(
        store_engine,
        "SELECT user_id, from_queue_type, to_queue_type, reason, source, agent_id, run_id"
        " FROM queue_transitions ORDER BY user_id",
    )
    assert [tuple(r.values()) for r in rows] == [
        (1, None, UNSIGNED, "missing_signature", "recheck", None, report.run_id),
        (2, None, OUTSTANDING, "pending_requirements", "recheck", None, report.run_id),
    ]
    checks = {
        r["user_id"]: r["last_queue_check"]
        for r in query(store_engine, "SELECT user_id, last_queue_check FROM user_call_scores")
    }
    assert checks[4] == T2
    assert checks[5] is None
    for uid in (1, 2, 3):
        assert checks[uid] is not None and checks[uid] >= report.started_at
    # The moved leads become candidates from the next population on, not in this one.
    assert pending_order(store_engine, UQ) == []
    assert pending_order(store_engine, OQ) == []
    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == expect()

    second = run(services)

    assert pending_order(store_engine, UQ) == [(1, 1)]
    assert pending_order(store_engine, OQ) == [(1, 2)]
    # Now 4 (T2) is the oldest unchecked after 3: it is moved too.
    assert queue_types(store_engine)[4] == UNSIGNED
    assert transitions(store_engine)[-1] == (4, None, UNSIGNED, "missing_signature", "recheck")
    assert figures(second.queues[QueueType.UNSIGNED_USERS]) == expect(eligible=1, populated=1)


def test_recheck_runs_with_a_queue_filter(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1}])

    report = run(services, queue=QueueType.OUTSTANDING_REQUESTS)

    assert queue_types(store_engine) == {1: UNSIGNED}
    assert transitions(store_engine) == [(1, None, UNSIGNED, "missing_signature", "recheck")]
    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == SKIPPED


# -- dry run -----------------------------------------------------------------------------------


def test_dry_run_writes_nothing_but_reports_what_a_real_run_would(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {1: 0, 2: 1, 3: 2})
    replica.outstanding(10, "payslip")
    add_scores(store_engine, [{"user_id": 10, "current_queue_type": OUTSTANDING}])
    run(services)
    # Since then: user 2 signed (and owes nothing), user 10's claims went, user 4 arrived,
    # user 3's call finished, and user 20 (no queue type) is unsigned now.
    with replica.engine.begin() as conn:
        conn.execute(text("UPDATE users SET current_signature_file_id = 5 WHERE id = 2"))
        conn.execute(text("DELETE FROM claims WHERE user_id = 10"))
    unsigned_leads(replica, store_engine, {4: 0})
    replica.unsigned(20)
    add_scores(store_engine, [{"user_id": 20}])
    with store_engine.begin() as conn:
        conn.execute(text(f"UPDATE {UQ} SET status = 'completed' WHERE user_id = 3"))
    owned = ["user_call_scores", UQ, OQ, "queue_transitions", "assignments"]
    before = {t: whole_table(store_engine, t) for t in owned}

    dry = run(services, dry_run=True)

    assert {t: whole_table(store_engine, t) for t in owned} == before
    assert figures(dry.queues[QueueType.UNSIGNED_USERS]) == expect(
        eligible=4, invalid=1, populated=3, removed=3
    )
    assert figures(dry.queues[QueueType.OUTSTANDING_REQUESTS]) == expect(
        eligible=1, invalid=1, populated=0, removed=1
    )
    [recorded] = query(
        store_engine,
        "SELECT trigger, dry_run, status, queue_filter, error FROM population_runs WHERE id = :id",
        id=dry.run_id,
    )
    assert recorded == {
        "trigger": "test",
        "dry_run": True,
        "status": "succeeded",
        "queue_filter": None,
        "error": None,
    }
    assert query(
        store_engine,
        "SELECT queue_type, dry_run, status, eligible, invalid, populated, removed"
        " FROM population_run_queues WHERE run_id = :id ORDER BY queue_type",
        id=dry.run_id,
    ) == [
        {
            "queue_type": OUTSTANDING,
            "dry_run": True,
            "status": "succeeded",
            "eligible": 1,
            "invalid": 1,
            "populated": 0,
            "removed": 1,
        },
        {
            "queue_type": UNSIGNED,
            "dry_run": True,
            "status": "succeeded",
            "eligible": 4,
            "invalid": 1,
            "populated": 3,
            "removed": 3,
        },
    ]

    real = run(services)

    for queue_type in QueueType:
        assert figures(real.queues[queue_type]) == figures(dry.queues[queue_type])
    assert pending_order(store_engine, UQ) == [(1, 4), (2, 1), (3, 3)]
    assert queue_types(store_engine) == {
        1: UNSIGNED,
        2: None,
        3: UNSIGNED,
        4: UNSIGNED,
        10: None,
        20: UNSIGNED,
    }


def test_dry_run_figures_match_a_real_run_when_a_lead_moves_across_queues(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    replica.outstanding(1, "payslip")  # scored as unsigned, but signed and owing a document
    replica.unsigned(2)
    add_scores(
        store_engine,
        [{"user_id": uid, "current_queue_type": UNSIGNED} for uid in (1, 2)],
    )

    dry = run(services, dry_run=True)
    real = run(services)

    assert figures(dry.queues[QueueType.UNSIGNED_USERS]) == expect(
        eligible=2, invalid=1, populated=1
    )
    assert figures(real.queues[QueueType.UNSIGNED_USERS]) == figures(
        dry.queues[QueueType.UNSIGNED_USERS]
    )
    assert figures(real.queues[QueueType.OUTSTANDING_REQUESTS]) == figures(
        dry.queues[QueueType.OUTSTANDING_REQUESTS]
    )


def test_dry_run_figures_match_a_real_run_when_a_lease_has_run_out(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {1: 0, 2: 1})
    run(services)
    agent = add_agent(store_engine, "a")
    with store_engine.begin() as conn:
        entry_id = conn.execute(text(f"SELECT id FROM {UQ} WHERE user_id = 2")).scalar_one()
        conn.execute(
            text(
                f"UPDATE {UQ} SET status = 'assigned', assigned_to_agent = :a,"
                " assigned_at = now() - interval '20 minutes' WHERE id = :e"
            ),
            {"a": agent, "e": entry_id},
        )
        conn.execute(
            text(
                "INSERT INTO assignments (agent_id, user_id, queue_type, source, queue_entry_id,"
                " priority_score, lease_expires_at)"
                " VALUES (:a, 2, 'unsigned_users', 'queue', :e, 1, now() - interval '5 minutes')"
            ),
            {"a": agent, "e": entry_id},
        )

    dry = run(services, dry_run=True)
    real = run(services)

    # The real run: the lease is swept, so both entries are removed and both users re-queued.
    assert figures(real.queues[QueueType.UNSIGNED_USERS]) == expect(
        eligible=2, populated=2, removed=2, kept_assigned=0
    )
    assert figures(dry.queues[QueueType.UNSIGNED_USERS]) == figures(
        real.queues[QueueType.UNSIGNED_USERS]
    )


def test_dry_run_does_not_recheck_unclassified_leads(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1}])

    run(services, dry_run=True)

    assert query(
        store_engine, "SELECT current_queue_type, last_queue_check FROM user_call_scores"
    ) == [{"current_queue_type": None, "last_queue_check": None}]
    assert transitions(store_engine) == []


# -- which queues run --------------------------------------------------------------------------


def test_queue_filter_reports_the_other_queue_skipped(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {1: 0})
    replica.outstanding(2)
    add_scores(store_engine, [{"user_id": 2, "current_queue_type": OUTSTANDING}])

    report = run(services, queue=QueueType.UNSIGNED_USERS)

    body = report.as_dict()
    assert body["success"] is True
    assert body["run_id"] == str(report.run_id)
    unsigned_body = dict(body["queues"][UNSIGNED])
    assert isinstance(unsigned_body.pop("duration_ms"), int)
    assert unsigned_body == expect(eligible=1, populated=1)
    assert body["queues"][OUTSTANDING] == {**SKIPPED, "duration_ms": 0}
    assert pending_order(store_engine, UQ) == [(1, 1)]
    assert pending_order(store_engine, OQ) == []
    assert query(
        store_engine,
        "SELECT queue_filter, status FROM population_runs WHERE id = :id",
        id=report.run_id,
    ) == [{"queue_filter": UNSIGNED, "status": "succeeded"}]


def test_separated_queues_off_skips_both_and_writes_nothing(
    make_services: Callable[..., Services], replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {1: 0})
    replica.user(2)  # no claim: would be reclassified
    replica.unsigned(3)  # no queue type: would be re-checked
    add_scores(
        store_engine,
        [{"user_id": 2, "current_queue_type": OUTSTANDING}, {"user_id": 3}],
    )
    owned = ["user_call_scores", UQ, OQ, "queue_transitions"]
    before = {t: whole_table(store_engine, t) for t in owned}

    report = run(make_services(use_separated_queues=False))

    assert report.success is True
    assert {t: figures(q) for t, q in report.queues.items()} == {
        QueueType.UNSIGNED_USERS: SKIPPED,
        QueueType.OUTSTANDING_REQUESTS: SKIPPED,
    }
    assert {t: whole_table(store_engine, t) for t in owned} == before


# -- the lagging-replica guard -----------------------------------------------------------------


def test_queue_with_more_than_a_fifth_missing_from_the_replica_fails_untouched(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {uid: uid for uid in range(1, 11)})
    replica.outstanding(20)
    replica.outstanding(21)
    add_scores(
        store_engine,
        [{"user_id": uid, "current_queue_type": OUTSTANDING} for uid in (20, 21)],
    )
    first = run(services)
    assert first.success is True
    # The replica loses 3 of the 10 unsigned candidates (30%); user 4 signed meanwhile.
    with replica.engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE id IN (2, 5, 9)"))
        conn.execute(text("UPDATE users SET current_signature_file_id = 1 WHERE id = 4"))
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE user_call_scores SET current_score = 0 WHERE user_id = 10"))
    snapshot = whole_table(store_engine, UQ)
    scores = whole_table(store_engine, "user_call_scores")

    report = run(services)

    unsigned = report.queues[QueueType.UNSIGNED_USERS]
    assert unsigned.status == "failed"
    assert unsigned.eligible == 10
    assert unsigned.error is not None
    assert "3 of 10" in unsigned.error and "replica" in unsigned.error
    assert figures(report.queues[QueueType.OUTSTANDING_REQUESTS]) == expect(
        eligible=2, populated=2, removed=2
    )
    assert report.success is False
    assert whole_table(store_engine, UQ) == snapshot
    assert whole_table(store_engine, "user_call_scores") == scores
    assert transitions(store_engine) == []
    [recorded] = query(
        store_engine, "SELECT status, error FROM population_runs WHERE id = :id", id=report.run_id
    )
    assert recorded["status"] == "failed"
    assert "replica" in recorded["error"]
    assert query(
        store_engine,
        "SELECT queue_type, status FROM population_run_queues WHERE run_id = :id"
        " ORDER BY queue_type",
        id=report.run_id,
    ) == [
        {"queue_type": OUTSTANDING, "status": "succeeded"},
        {"queue_type": UNSIGNED, "status": "failed"},
    ]


def test_exactly_a_fifth_missing_from_the_replica_still_populates(
    services: Services, replica: Replica, store_engine: Engine
) -> None:
    unsigned_leads(replica, store_engine, {uid: uid for uid in range(1, 11)})
    with replica.engine.begin() as conn:
        conn.execute(text("DELETE FROM users WHERE id IN (3, 8)"))

    report = run(services)

    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == expect(
        eligible=10, invalid=2, populated=8
    )
    assert pending_order(store_engine, UQ) == [
        (1, 1),
        (2, 2),
        (3, 4),
        (4, 5),
        (5, 6),
        (6, 7),
        (7, 9),
        (8, 10),
    ]
    assert transitions(store_engine) == [
        (3, UNSIGNED, None, "not_in_replica", "population"),
        (8, UNSIGNED, None, "not_in_replica", "population"),
    ]


# -- the walk's read-ahead ---------------------------------------------------------------------


def population_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("population-replica")]


def test_walk_over_many_batches_keeps_order_and_reads_no_batch_past_the_limit(
    make_services: Callable[..., Services], replica: Replica, store_engine: Engine
) -> None:
    services = make_services(replica_batch_size=3, queue_size_limit=10, recheck_batch=0)
    sent: list[str] = []
    event.listen(
        services.replica.engine,
        "before_cursor_execute",
        lambda conn, cursor, statement, *args: sent.append(statement),
    )
    unsigned_leads(replica, store_engine, {uid: uid for uid in range(1, 31)})
    with replica.engine.begin() as conn:  # every fourth lead no longer has a claim
        conn.execute(text("DELETE FROM claims WHERE user_id % 4 = 0"))

    report = run(services, queue=QueueType.UNSIGNED_USERS)

    # Batches of 3 in serving order; the tenth valid lead (13) is in the fifth, so the walk
    # classified 15 leads in 5 statements and read nothing further ahead.
    assert figures(report.queues[QueueType.UNSIGNED_USERS]) == expect(
        eligible=15, invalid=3, populated=10
    )
    assert pending_order(store_engine, UQ) == list(
        enumerate([1, 2, 3, 5, 6, 7, 9, 10, 11, 13], start=1)
    )
    assert transitions(store_engine) == [
        (uid, UNSIGNED, None, "no_open_claim", "population") for uid in (4, 8, 12)
    ]
    assert len([s for s in sent if "claim_requirements" in s]) == 5
    assert population_threads() == []


def test_replica_failing_on_a_batch_read_ahead_fails_the_queue_and_leaves_no_worker(
    make_services: Callable[..., Services],
    replica: Replica,
    replica_url: str,
    store_engine: Engine,
) -> None:
    unsigned_leads(replica, store_engine, {uid: uid for uid in range(1, 21)})
    url = make_url(replica_url)
    with FaultProxy(url.port or 5432) as proxy:
        services = make_services(
            replica_database_url=url.set(port=proxy.port).render_as_string(hide_password=False),
            replica_batch_size=2,
            queue_size_limit=20,
            replica_statement_timeout_ms=1000,
        )
        assert run(services, queue=QueueType.UNSIGNED_USERS).success is True
        before = {t: whole_table(store_engine, t) for t in (UQ, "user_call_scores")}
        reads: list[str] = []

        def cut_the_third_read(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if "claim_requirements" in statement:
                reads.append(statement)
                if len(reads) == 3:  # read ahead while the second batch is sorted out
                    proxy.cut()

        event.listen(services.replica.engine, "before_cursor_execute", cut_the_third_read)

        report = run(services, queue=QueueType.UNSIGNED_USERS)

    unsigned = report.queues[QueueType.UNSIGNED_USERS]
    assert unsigned.status == "failed"
    assert unsigned.error is not None
    assert unsigned.error.startswith("the claims replica did not answer")
    assert {t: whole_table(store_engine, t) for t in before} == before
    assert transitions(store_engine) == []
    assert population_threads() == []
