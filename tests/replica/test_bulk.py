"""The population's SQL classification (app/replica/bulk.py) agrees with THE rule (SPEC 3.1, the
Python ``classify``) on every user of a generated replica, on PostgreSQL and on MariaDB.

The generator is seeded, so a failure reproduces. It aims at the places where SQL and Python part
ways: case and accents (MariaDB's default collations ignore both), trailing spaces (its PAD SPACE
comparisons ignore them), NULL reasons, non-ASCII letters that a locale's ``lower()`` folds to
ASCII and Python does not, and ties on ``created_at`` that only the id breaks. Timestamps are whole
seconds: MariaDB's DATETIME keeps no fraction.
"""

from __future__ import annotations

import functools
import random
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, insert

from app.replica.bulk import classify_in_sql
from app.replica.classification import (
    BASE_ID_DOCUMENT_REASON,
    EXCLUDED_REQUIREMENT_TYPES,
    Verdict,
)
from app.replica.reader import Replica
from app.replica.schema import claim_requirements, claims, users

USERS = 10_500
SEED = 20250301

# Few distinct instants, so that claims and requirements often share their created_at.
INSTANTS = [datetime(2025, 3, 1, 9, tzinfo=UTC) + timedelta(hours=7 * i) for i in range(4)]

OPEN_STATUSES = [
    "open",
    "OPEN",
    "Active",
    "submitted",
    "PENDING",
    "cancelled ",  # the trailing space makes it another status: open
    " Cancelled",
    "canceled",
    "cancelléd",
    "CANCELLED_BY_USER",
]
CANCELLED_STATUSES = ["cancelled", "CANCELLED", "Cancelled", "cAnCeLlEd"]
VALID_TYPES = ["proof_of_address", "bank_statement", "payslip", "council_tax", "médical_report"]
NEAR_MISS_TYPES = [
    "Signature",
    "SIGNATURE",
    "CFA",
    "cfa ",
    " cfa",
    "Letter_Of_Authority",
    "signaturé",
    "ID_DOCUMENT",
    "Id_document",
    "id_document ",
]
REASONS = [
    BASE_ID_DOCUMENT_REASON,
    BASE_ID_DOCUMENT_REASON,
    None,
    None,
    "",
    "Base requirement for claim.",
    "BASE REQUIREMENT FOR CLAIM.",
    "base requirement for claim. ",
    "base requirement for claim",
    "base requirement for claím.",
    "Requested by solicitor",
]
STATUSES = [
    "pending",
    "PENDING",
    "Pending",
    "pEnDiNg",
    "completed",
    "COMPLETED",
    "Completed",
    "rejected",
    "WAIVED",
    "pending ",  # neither pending nor completed: counts in the total only
    "PENDİNG",  # a locale's lower() makes this 'pending'; Python's does not
    "complétéd",
]


class _Book:
    """Rows for the three replica tables, with ids handed out in shuffled order so that the id
    tie-break never coincides with insertion order."""

    def __init__(self, rng: random.Random, users: int) -> None:
        self.rng = rng
        self.users: list[dict[str, Any]] = []
        self.claims: list[dict[str, Any]] = []
        self.requirements: list[dict[str, Any]] = []
        self._claim_ids = iter(rng.sample(range(1, 10 * users), 10 * users - 1))
        self._requirement_ids = iter(rng.sample(range(1, 40 * users), 40 * users - 1))

    def user(self, user_id: int, *, enabled: bool, signed: bool) -> None:
        self.users.append(
            {
                "id": user_id,
                "is_enabled": enabled,
                "current_signature_file_id": user_id * 3 if signed else None,
                "created_at": self.rng.choice(INSTANTS) - timedelta(days=self.rng.randrange(400)),
            }
        )

    def claim(self, user_id: int, status: str) -> int:
        claim_id = next(self._claim_ids)
        self.claims.append(
            {
                "id": claim_id,
                "user_id": user_id,
                "status": status,
                "created_at": self.rng.choice(INSTANTS),
            }
        )
        return claim_id

    def requirement(self, claim_id: int, type_: str, status: str, reason: str | None) -> None:
        self.requirements.append(
            {
                "id": next(self._requirement_ids),
                "claim_id": claim_id,
                "type": type_,
                "status": status,
                "claim_requirement_reason": reason,
                "created_at": self.rng.choice(INSTANTS),
            }
        )


def _requirement_type(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.30:
        return "id_document"
    if roll < 0.55:
        return rng.choice(VALID_TYPES)
    if roll < 0.80:
        return rng.choice(sorted(EXCLUDED_REQUIREMENT_TYPES))
    return rng.choice(NEAR_MISS_TYPES)


@functools.cache
def generate(seed: int, users: int) -> tuple[_Book, list[int]]:
    """The replica's rows, and the ids to classify: every generated user plus ids it lacks (some
    of which still have claims, as a half-synced replica would). Cached: both engines get the
    same book, and no test changes it."""
    rng = random.Random(seed)
    book = _Book(rng, users)
    ids = list(range(1, users + 1))
    for user_id in ids:
        if rng.random() < 0.04:  # missing from the replica
            if rng.random() < 0.5:
                book.claim(user_id, rng.choice(OPEN_STATUSES))
            continue
        book.user(user_id, enabled=rng.random() >= 0.06, signed=rng.random() < 0.65)
        cancelled_share = rng.choice([0.0, 0.3, 1.0])  # 1.0: only cancelled claims
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4])):
            cancelled = rng.random() < cancelled_share
            status = rng.choice(CANCELLED_STATUSES if cancelled else OPEN_STATUSES)
            claim_id = book.claim(user_id, status)
            for _ in range(rng.choice([0, 1, 2, 3, 4, 6])):
                type_ = _requirement_type(rng)
                # Reasons appear on other types too: only an id_document's can exclude it.
                reason = (
                    rng.choice(REASONS) if type_ == "id_document" or rng.random() < 0.2 else None
                )
                book.requirement(claim_id, type_, rng.choice(STATUSES), reason)
    rng.shuffle(ids)  # the population asks in serving order, not id order
    return book, ids


def ties(book: _Book) -> tuple[int, int]:
    """Users whose oldest open claims, and whose oldest pending requirements of open claims, share
    their created_at: the cases only the id decides."""
    open_claims = {c["id"]: c for c in book.claims if c["status"].lower() != "cancelled"}
    claim_times: dict[int, list[datetime]] = defaultdict(list)
    for claim in open_claims.values():
        claim_times[claim["user_id"]].append(claim["created_at"])
    requirement_times: dict[int, list[datetime]] = defaultdict(list)
    for req in book.requirements:
        if req["claim_id"] in open_claims and req["status"].lower() == "pending":
            requirement_times[open_claims[req["claim_id"]]["user_id"]].append(req["created_at"])

    def tied(by_user: dict[int, list[datetime]]) -> int:
        return sum(times.count(min(times)) > 1 for times in by_user.values())

    return tied(claim_times), tied(requirement_times)


def store(engine: Engine, book: _Book) -> None:
    with engine.begin() as conn:
        for table, rows in (
            (users, book.users),
            (claims, book.claims),
            (claim_requirements, book.requirements),
        ):
            for start in range(0, len(rows), 5000):
                conn.execute(insert(table), rows[start : start + 5000])


def test_sql_classification_agrees_with_the_rule_on_generated_users(replica_db: Engine) -> None:
    book, ids = generate(SEED, USERS)
    store(replica_db, book)
    replica = Replica(replica_db)

    in_sql = classify_in_sql(replica, ids)
    by_rule = replica.classify(ids)

    # The generator reaches every branch and edge, else agreement would prove little.
    reasons = Counter(v.reason for v in by_rule.values())
    assert set(reasons) == {
        "not_in_replica",
        "user_disabled",
        "no_open_claim",
        "missing_signature",
        "nothing_outstanding",
        "pending_requirements",
    }
    assert min(reasons.values()) >= 300, reasons
    outstanding = [v.entry_fields for v in by_rule.values() if v.reason == "pending_requirements"]
    assert sum(len(f["requirement_types"]) > 1 for f in outstanding) >= 300
    assert sum(f["total_requirements"] > f["pending_requirements"] for f in outstanding) >= 300
    assert sum(f["completed_requirements"] > 0 for f in outstanding) >= 300
    assert {t for f in outstanding for t in f["requirement_types"]} >= {
        "id_document",
        *NEAR_MISS_TYPES,
    }
    assert min(ties(book)) >= 300

    assert list(in_sql) == list(by_rule) == ids
    # repr as well as ==: 3 == Decimal(3), and equal instants in different zones compare equal.
    differing = [
        (uid, in_sql[uid], by_rule[uid])
        for uid in ids
        if in_sql[uid] != by_rule[uid] or repr(in_sql[uid]) != repr(by_rule[uid])
    ]
    assert differing == [], f"{len(differing)} users differ, first ones: {differing[:5]}"

    # Intake's variant (queue type and reason, no entry fields) says the same.
    brief = classify_in_sql(replica, ids, details=False)
    assert {uid: (v.queue_type, v.reason, v.entry_fields) for uid, v in brief.items()} == {
        uid: (v.queue_type, v.reason, {}) for uid, v in by_rule.items()
    }


@pytest.mark.parametrize("batch_size", [1, 7])
def test_sql_classification_is_the_same_in_any_batch_size(
    replica_db: Engine, batch_size: int
) -> None:
    book, ids = generate(SEED + batch_size, 60)
    store(replica_db, book)
    ids = [*ids, 10**12, ids[0]]  # an unknown id, and a repeated one

    verdicts = classify_in_sql(Replica(replica_db, batch_size=batch_size), ids)

    assert list(verdicts) == ids[:-1]
    assert verdicts == Replica(replica_db).classify(ids)
    assert verdicts[10**12] == Verdict(None, "not_in_replica")
