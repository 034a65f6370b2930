"""SPEC 3.1: which queue a user belongs in. The single source of truth for population, claims
and outcomes; every caller hands it the same UserFacts read from the replica.

The rule runs in Python, not SQL, on purpose: the replica may be MySQL, whose default collations
compare text case-insensitively, while the contract wants requirement types and the reason text
compared exactly and statuses compared case-insensitively.

Population alone, which classifies hundreds of thousands of candidates, has the replica evaluate a
translation of this rule into SQL (app/replica/bulk.py, exact on both dialects); the translation
follows this function, and tests/replica/test_bulk.py fails when the two disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.vocabulary import QueueType

EXCLUDED_REQUIREMENT_TYPES = frozenset(
    {
        "signature",
        "vehicle_registration",
        "cfa",
        "solicitor_letter_of_authority",
        "letter_of_authority",
    }
)
BASE_ID_DOCUMENT_REASON = "base requirement for claim."


@dataclass(slots=True)
class ReplicaUser:
    id: int
    is_enabled: bool
    current_signature_file_id: int | None
    created_at: datetime


@dataclass(slots=True)
class ReplicaClaim:
    id: int
    status: str
    created_at: datetime


@dataclass(slots=True)
class ReplicaRequirement:
    id: int
    claim_id: int
    type: str
    status: str
    reason: str | None
    created_at: datetime


@dataclass(slots=True)
class UserFacts:
    """Everything the rule needs about one user; ``user`` is None when the replica lacks them."""

    user: ReplicaUser | None
    claims: list[ReplicaClaim] = field(default_factory=list)
    requirements: list[ReplicaRequirement] = field(default_factory=list)


@dataclass(slots=True)
class Verdict:
    queue_type: QueueType | None
    reason: str
    # Columns of a queue entry for this user (claim_id and the queue's detail columns).
    entry_fields: dict[str, Any] = field(default_factory=dict)

    @property
    def missing(self) -> bool:
        return self.reason == "not_in_replica"


def is_open_claim(claim: ReplicaClaim) -> bool:
    return claim.status.lower() != "cancelled"


def is_valid_requirement(req: ReplicaRequirement) -> bool:
    """Valid: not an excluded type, and not the id_document every claim starts with."""
    if req.type in EXCLUDED_REQUIREMENT_TYPES:
        return False
    return not (req.type == "id_document" and req.reason == BASE_ID_DOCUMENT_REASON)


def _oldest_key(item: ReplicaClaim | ReplicaRequirement) -> tuple[datetime, int]:
    return (item.created_at, item.id)


def classify(facts: UserFacts) -> Verdict:
    user = facts.user
    if user is None:
        return Verdict(None, "not_in_replica")
    if not user.is_enabled:
        return Verdict(None, "user_disabled")
    open_claims = [c for c in facts.claims if is_open_claim(c)]
    if not open_claims:
        return Verdict(None, "no_open_claim")
    if user.current_signature_file_id is None:
        oldest_claim = min(open_claims, key=_oldest_key)
        return Verdict(
            QueueType.UNSIGNED_USERS,
            "missing_signature",
            {
                "claim_id": oldest_claim.id,
                "signature_missing_since": user.created_at,
                "signature_type": "initial",
            },
        )
    open_ids = {c.id for c in open_claims}
    valid = [r for r in facts.requirements if r.claim_id in open_ids and is_valid_requirement(r)]
    pending = [r for r in valid if r.status.lower() == "pending"]
    if not pending:
        return Verdict(None, "nothing_outstanding")
    oldest = min(pending, key=_oldest_key)
    return Verdict(
        QueueType.OUTSTANDING_REQUESTS,
        "pending_requirements",
        {
            "claim_id": oldest.claim_id,
            "requirement_types": sorted({r.type for r in pending}),
            "total_requirements": len(valid),
            "pending_requirements": len(pending),
            "completed_requirements": sum(1 for r in valid if r.status.lower() == "completed"),
            "oldest_requirement_date": oldest.created_at,
        },
    )
