"""SPEC 3.1 against a real replica, on PostgreSQL and on MariaDB (``replica_db`` is parametrized).

Timestamps are whole seconds in UTC: MariaDB's DATETIME keeps no fraction and no zone.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event

from app.replica.classification import Verdict
from app.replica.reader import Replica
from app.vocabulary import QueueType
from tests.factories import Replica as ReplicaRows

T0 = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
T1 = datetime(2025, 3, 2, 9, 0, 0, tzinfo=UTC)
T2 = datetime(2025, 3, 3, 9, 0, 0, tzinfo=UTC)
T3 = datetime(2025, 3, 4, 9, 0, 0, tzinfo=UTC)
T4 = datetime(2025, 3, 5, 9, 0, 0, tzinfo=UTC)
USER_CREATED = datetime(2024, 11, 20, 17, 45, 12, tzinfo=UTC)

EXCLUDED_TYPES = [
    "signature",
    "vehicle_registration",
    "cfa",
    "solicitor_letter_of_authority",
    "letter_of_authority",
]
BASE_REASON = "base requirement for claim."


def classify_one(engine: Engine, user_id: int) -> Verdict:
    verdicts = Replica(engine).classify([user_id])
    assert list(verdicts) == [user_id]
    return verdicts[user_id]


def none_verdict(reason: str) -> Verdict:
    return Verdict(None, reason, {})


def outstanding(
    *,
    claim_id: int,
    types: list[str],
    total: int,
    pending: int,
    completed: int,
    oldest: datetime,
) -> Verdict:
    return Verdict(
        QueueType.OUTSTANDING_REQUESTS,
        "pending_requirements",
        {
            "claim_id": claim_id,
            "requirement_types": types,
            "total_requirements": total,
            "pending_requirements": pending,
            "completed_requirements": completed,
            "oldest_requirement_date": oldest,
        },
    )


def signed_user_with_one_requirement(
    rows: ReplicaRows, user_id: int, type_: str, reason: str | None, status: str = "pending"
) -> int:
    rows.user(user_id, signed=True)
    claim_id = rows.claim(user_id, claim_id=user_id * 10, created_at=T0)
    rows.requirement(
        claim_id,
        type_,
        status=status,
        reason=reason,
        created_at=T1,
        requirement_id=user_id * 100,
    )
    return claim_id


# -- rule 1: missing or disabled ---------------------------------------------------------------


def test_user_missing_from_replica_is_none_and_marked_missing(replica_db: Engine) -> None:
    verdict = classify_one(replica_db, 424242)

    assert verdict == none_verdict("not_in_replica")
    assert verdict.missing is True


def test_disabled_user_is_none_even_with_open_claim_and_pending_requirement(
    replica_db: Engine, rows: ReplicaRows
) -> None:
    rows.user(1, enabled=False, signed=False)
    rows.claim(1, claim_id=10)
    rows.user(2, enabled=False, signed=True)
    claim_id = rows.claim(2, claim_id=20)
    rows.requirement(claim_id, "proof_of_address", requirement_id=200)

    verdicts = Replica(replica_db).classify([1, 2])

    assert verdicts == {1: none_verdict("user_disabled"), 2: none_verdict("user_disabled")}
    assert verdicts[1].missing is False


# -- rule 2: no open claim ---------------------------------------------------------------------


def test_user_without_claims_is_none(replica_db: Engine, rows: ReplicaRows) -> None:
    rows.user(1, signed=False)
    rows.user(2, signed=True)

    assert Replica(replica_db).classify([1, 2]) == {
        1: none_verdict("no_open_claim"),
        2: none_verdict("no_open_claim"),
    }


def test_only_cancelled_claims_in_any_case_is_none(replica_db: Engine, rows: ReplicaRows) -> None:
    rows.user(1, signed=False)
    rows.claim(1, status="CANCELLED", claim_id=10)
    rows.claim(1, status="Cancelled", claim_id=11)
    rows.claim(1, status="cancelled", claim_id=12)
    # Signed, with a pending valid requirement, but only on a cancelled claim.
    rows.user(2, signed=True)
    cancelled = rows.claim(2, status="CANCELLED", claim_id=20)
    rows.requirement(cancelled, "proof_of_address", status="pending", requirement_id=200)

    assert Replica(replica_db).classify([1, 2]) == {
        1: none_verdict("no_open_claim"),
        2: none_verdict("no_open_claim"),
    }


# -- rule 3: unsigned --------------------------------------------------------------------------


def test_unsigned_user_with_open_claim_gets_oldest_open_claim(
    replica_db: Engine, rows: ReplicaRows
) -> None:
    rows.user(7, signed=False, created_at=USER_CREATED)
    rows.claim(7, status="Cancelled", created_at=datetime(2024, 1, 1, tzinfo=UTC), claim_id=5)
    rows.claim(7, status="open", created_at=T2, claim_id=3)
    # Two open claims share the oldest created_at: the lower id wins, whatever the insert order.
    rows.claim(7, status="SUBMITTED", created_at=T1, claim_id=12)
    rows.claim(7, status="open", created_at=T1, claim_id=11)

    verdict = classify_one(replica_db, 7)

    assert verdict == Verdict(
        QueueType.UNSIGNED_USERS,
        "missing_signature",
        {"claim_id": 11, "signature_missing_since": USER_CREATED, "signature_type": "initial"},
    )
    assert verdict.entry_fields["signature_missing_since"].utcoffset().total_seconds() == 0


def test_unsigned_wins_over_pending_requirements(replica_db: Engine, rows: ReplicaRows) -> None:
    rows.user(8, signed=False, created_at=USER_CREATED)
    claim_id = rows.claim(8, created_at=T0, claim_id=80)
    rows.requirement(claim_id, "proof_of_address", status="PENDING", requirement_id=800)

    assert classify_one(replica_db, 8) == Verdict(
        QueueType.UNSIGNED_USERS,
        "missing_signature",
        {"claim_id": 80, "signature_missing_since": USER_CREATED, "signature_type": "initial"},
    )


# -- rule 4: outstanding -----------------------------------------------------------------------


def test_signed_user_with_pending_valid_requirements_is_outstanding_with_exact_figures(
    replica_db: Engine, rows: ReplicaRows
) -> None:
    rows.user(9, signed=True)
    claim_a = rows.claim(9, status="open", created_at=T0, claim_id=100)
    claim_b = rows.claim(9, status="ACTIVE", created_at=T1, claim_id=101)
    claim_c = rows.claim(9, status="CANCELLED", created_at=T0, claim_id=102)
    # Valid pending, in mixed case.
    rows.requirement(
        claim_a, "proof_of_address", status="PENDING", created_at=T3, requirement_id=200
    )
    rows.requirement(claim_b, "bank_statement", status="Pending", created_at=T2, requirement_id=202)
    # Same created_at as 202 and a lower id: the oldest pending one, on claim B.
    rows.requirement(claim_b, "bank_statement", status="pending", created_at=T2, requirement_id=201)
    rows.requirement(
        claim_a,
        "id_document",
        status="pending",
        reason="Base requirement for claim.",
        created_at=T4,
        requirement_id=209,
    )
    # Valid completed (older than every pending one: never the "oldest pending").
    rows.requirement(claim_a, "payslip", status="Completed", created_at=T0, requirement_id=203)
    rows.requirement(
        claim_a, "proof_of_address", status="COMPLETED", created_at=T0, requirement_id=204
    )
    # Valid, neither pending nor completed: counts in the total only.
    rows.requirement(claim_a, "utility_bill", status="rejected", created_at=T0, requirement_id=205)
    # Invalid: excluded type, the base id_document, and anything on the cancelled claim.
    rows.requirement(claim_a, "signature", status="pending", created_at=T0, requirement_id=206)
    rows.requirement(
        claim_a,
        "id_document",
        status="pending",
        reason=BASE_REASON,
        created_at=T0,
        requirement_id=207,
    )
    rows.requirement(claim_c, "council_tax", status="pending", created_at=T0, requirement_id=208)
    rows.requirement(claim_c, "payslip", status="completed", created_at=T0, requirement_id=210)

    assert classify_one(replica_db, 9) == outstanding(
        claim_id=101,
        types=["bank_statement", "id_document", "proof_of_address"],
        total=7,
        pending=4,
        completed=2,
        oldest=T2,
    )


@pytest.mark.parametrize("excluded", EXCLUDED_TYPES)
def test_excluded_requirement_type_alone_is_none(
    replica_db: Engine, rows: ReplicaRows, excluded: str
) -> None:
    signed_user_with_one_requirement(rows, 11, excluded, reason=None, status="PENDING")

    assert classify_one(replica_db, 11) == none_verdict("nothing_outstanding")


def test_base_id_document_alone_is_none(replica_db: Engine, rows: ReplicaRows) -> None:
    signed_user_with_one_requirement(rows, 12, "id_document", reason=BASE_REASON)

    assert classify_one(replica_db, 12) == none_verdict("nothing_outstanding")


@pytest.mark.parametrize(
    "reason",
    [
        None,
        "",
        "requested by the solicitor",
        "Base requirement for claim.",
        "BASE REQUIREMENT FOR CLAIM.",
        "base requirement for claim. ",
        "base requirement for claim",
    ],
    ids=["null", "empty", "other", "capitalised", "upper", "trailing-space", "no-full-stop"],
)
def test_id_document_with_any_other_reason_is_valid(
    replica_db: Engine, rows: ReplicaRows, reason: str | None
) -> None:
    claim_id = signed_user_with_one_requirement(rows, 13, "id_document", reason=reason)

    assert classify_one(replica_db, 13) == outstanding(
        claim_id=claim_id, types=["id_document"], total=1, pending=1, completed=0, oldest=T1
    )


@pytest.mark.parametrize(
    "type_",
    ["Signature", "SIGNATURE", "CFA", "Letter_Of_Authority", "Vehicle_Registration", "cfa "],
)
def test_requirement_types_are_compared_exactly(
    replica_db: Engine, rows: ReplicaRows, type_: str
) -> None:
    """MariaDB's default collation says 'Signature' = 'signature'; the contract does not."""
    claim_id = signed_user_with_one_requirement(rows, 14, type_, reason=None)

    assert classify_one(replica_db, 14) == outstanding(
        claim_id=claim_id, types=[type_], total=1, pending=1, completed=0, oldest=T1
    )


def test_id_document_type_in_other_case_with_base_reason_is_valid(
    replica_db: Engine, rows: ReplicaRows
) -> None:
    claim_id = signed_user_with_one_requirement(rows, 15, "ID_Document", reason=BASE_REASON)

    assert classify_one(replica_db, 15) == outstanding(
        claim_id=claim_id, types=["ID_Document"], total=1, pending=1, completed=0, oldest=T1
    )


def test_requirements_of_cancelled_claims_are_ignored(
    replica_db: Engine, rows: ReplicaRows
) -> None:
    rows.user(16, signed=True)
    open_claim = rows.claim(16, status="open", created_at=T1, claim_id=160)
    cancelled = rows.claim(16, status="Cancelled", created_at=T0, claim_id=161)
    rows.requirement(open_claim, "payslip", status="completed", created_at=T2, requirement_id=1600)
    rows.requirement(
        cancelled, "bank_statement", status="pending", created_at=T0, requirement_id=1601
    )
    rows.requirement(cancelled, "payslip", status="PENDING", created_at=T0, requirement_id=1602)

    assert classify_one(replica_db, 16) == none_verdict("nothing_outstanding")

    # Once the open claim has a pending requirement too, only the open claim's rows count.
    rows.requirement(open_claim, "payslip", status="pending", created_at=T3, requirement_id=1603)

    assert classify_one(replica_db, 16) == outstanding(
        claim_id=160, types=["payslip"], total=2, pending=1, completed=1, oldest=T3
    )


# -- rule 5: signed, nothing pending -----------------------------------------------------------


def test_signed_user_with_only_completed_requirements_is_none(
    replica_db: Engine, rows: ReplicaRows
) -> None:
    rows.user(17, signed=True)
    claim_id = rows.claim(17, claim_id=170)
    rows.requirement(claim_id, "payslip", status="completed", requirement_id=1700)
    rows.requirement(claim_id, "bank_statement", status="COMPLETED", requirement_id=1701)

    assert classify_one(replica_db, 17) == none_verdict("nothing_outstanding")


def test_signed_user_with_open_claim_and_no_requirements_is_none(
    replica_db: Engine, rows: ReplicaRows
) -> None:
    rows.user(18, signed=True)
    rows.claim(18, claim_id=180)

    assert classify_one(replica_db, 18) == none_verdict("nothing_outstanding")


# -- batching ----------------------------------------------------------------------------------


@pytest.fixture
def statements(replica_db: Engine) -> Iterator[list[str]]:
    """Every SQL statement the replica engine sends through SQLAlchemy's execution while the
    test runs (one user's statements run on the driver's cursor, unseen here)."""
    sent: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        sent.append(statement)

    event.listen(replica_db, "before_cursor_execute", record)
    yield sent
    event.remove(replica_db, "before_cursor_execute", record)


def test_batched_classification_equals_unbatched_at_one_statement_per_batch(
    replica_db: Engine, rows: ReplicaRows, statements: list[str]
) -> None:
    ids = list(range(501, 511))
    for i, uid in enumerate(ids):
        kind = i % 5
        if kind == 0:
            rows.user(uid, signed=False, created_at=USER_CREATED)
            rows.claim(uid, created_at=T0, claim_id=uid * 10)
        elif kind == 1:
            rows.user(uid, signed=True)
            cid = rows.claim(uid, created_at=T0, claim_id=uid * 10)
            rows.requirement(cid, "payslip", created_at=T1, requirement_id=uid * 100)
            rows.requirement(
                cid,
                "bank_statement",
                status="completed",
                created_at=T0,
                requirement_id=uid * 100 + 1,
            )
        elif kind == 2:
            rows.user(uid, signed=True)
            rows.claim(uid, status="CANCELLED", claim_id=uid * 10)
        elif kind == 3:
            rows.user(uid, enabled=False)
        # kind 4: missing from the replica.

    statements.clear()
    unbatched = Replica(replica_db).classify(ids)
    assert len(statements) == 1

    statements.clear()
    batched = Replica(replica_db, batch_size=4).classify(ids)
    assert len(statements) == 3  # 3 batches (4 + 4 + 2 users), one statement each

    assert batched == unbatched
    # One user at a time (a claim's check, an outcome) has a statement of its own, run on the
    # driver's cursor: it must agree with the batch statement on every kind of user.
    assert {uid: Replica(replica_db).classify([uid])[uid] for uid in ids} == unbatched
    assert list(batched) == ids
    unsigned = Verdict(
        QueueType.UNSIGNED_USERS,
        "missing_signature",
        {"claim_id": 5010, "signature_missing_since": USER_CREATED, "signature_type": "initial"},
    )
    assert batched[501] == unsigned
    assert batched[502] == outstanding(
        claim_id=5020, types=["payslip"], total=2, pending=1, completed=1, oldest=T1
    )
    assert batched[503] == none_verdict("no_open_claim")
    assert batched[504] == none_verdict("user_disabled")
    assert batched[505] == none_verdict("not_in_replica")
    assert [batched[uid].queue_type for uid in ids] == [
        QueueType.UNSIGNED_USERS,
        QueueType.OUTSTANDING_REQUESTS,
        None,
        None,
        None,
    ] * 2


def test_statement_count_grows_with_batches_not_users(
    replica_db: Engine, rows: ReplicaRows, statements: list[str]
) -> None:
    for uid in range(601, 631):
        rows.user(uid, signed=False)
        rows.claim(uid, claim_id=uid * 10)

    statements.clear()
    Replica(replica_db, batch_size=10).classify(list(range(601, 631)))
    assert len(statements) == 3  # 30 users, 3 batches

    statements.clear()
    Replica(replica_db, batch_size=100).classify(list(range(601, 631)))
    assert len(statements) == 1
