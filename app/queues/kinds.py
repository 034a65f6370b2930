"""What differs between the two queues, as data. Every mechanism takes a QueueKind."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from app.models.queues import OutstandingRequestsEntry, QueueEntry, UnsignedUsersEntry
from app.rules.caps import attempt_cap_sql


class QueueType(StrEnum):
    UNSIGNED_USERS = "unsigned_users"
    OUTSTANDING_REQUESTS = "outstanding_requests"


@dataclass(frozen=True)
class QueueKind:
    queue_type: QueueType
    model: type[QueueEntry]
    reason_suffix: str
    # Columns only this queue's table has; the classification fills them (Verdict.entry_fields).
    detail_columns: tuple[str, ...]
    # Second key of the per-queue swap lock: pg_advisory_xact_lock(SWAP_LOCK_KEY, swap_lock_id).
    swap_lock_id: int

    @property
    def table(self) -> str:
        return str(self.model.__tablename__)


KINDS: dict[QueueType, QueueKind] = {
    QueueType.UNSIGNED_USERS: QueueKind(
        queue_type=QueueType.UNSIGNED_USERS,
        model=UnsignedUsersEntry,
        reason_suffix=" - Missing signature",
        detail_columns=("signature_missing_since", "signature_type"),
        swap_lock_id=1,
    ),
    QueueType.OUTSTANDING_REQUESTS: QueueKind(
        queue_type=QueueType.OUTSTANDING_REQUESTS,
        model=OutstandingRequestsEntry,
        reason_suffix=" - Outstanding requirements",
        detail_columns=(
            "requirement_types",
            "total_requirements",
            "pending_requirements",
            "completed_requirements",
            "oldest_requirement_date",
        ),
        swap_lock_id=2,
    ),
}

# The contract's key for single-flight population: 'call' in ASCII.
POPULATION_LOCK_KEY = 1667329132
# Refresh swap vs. claims: claims take this per-queue lock shared, the swap takes it exclusive.
SWAP_LOCK_KEY = 1667329132


def score_band_reason(score: int) -> str:
    if score <= 0:
        return "New lead"
    if score <= 5:
        return "High priority"
    if score <= 10:
        return "Medium priority"
    return "Aged lead"


def queue_reason(kind: QueueKind, score: int) -> str:
    return score_band_reason(score) + kind.reason_suffix


def candidates_sql(*, live_leases_only: bool, attempt_caps: bool = False) -> str:
    """The leads of a queue type (``:queue_type``) that may be called now, past the cooling
    period (``:cooling`` minutes), in serving order (score, newest first, user id): what a
    population walks and what direct mode serves from.

    A user with an active assignment is never a candidate. ``live_leases_only`` counts only
    assignments whose lease still runs: a population sweeps lapsed ones before its swap, so
    their users belong in the new snapshot; a direct claim would collide with the lapsed
    assignment's unique index, so it skips them until a sweep.

    ``attempt_caps`` leaves out users at an attempt cap (SPEC 7.3, app/rules/caps.py); the
    statement then takes ``:max_attempts_per_day`` and ``:max_attempts_per_week``
    (``app.rules.caps.cap_params``). The population sets it; direct mode will with the claim
    path's rewrite (issue 10), which also binds the two parameters.
    """
    lease = " AND a.lease_expires_at > now()" if live_leases_only else ""
    caps = f"\n           AND {attempt_cap_sql('s.user_id')} IS NULL" if attempt_caps else ""
    return f"""
        SELECT s.user_id, s.current_score, s.created_at
          FROM user_call_scores s
         WHERE s.current_queue_type = :queue_type
           AND s.is_active
           AND (s.next_call_after IS NULL OR s.next_call_after <= now())
           AND s.created_at <= now() - make_interval(mins => :cooling)
           AND NOT EXISTS (SELECT 1 FROM assignments a
                            WHERE a.user_id = s.user_id AND a.status = 'active'{lease}){caps}
         ORDER BY s.current_score, s.created_at DESC, s.user_id
    """
