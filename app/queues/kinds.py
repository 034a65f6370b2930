"""What differs between the two queues, as data. Every mechanism takes a QueueKind."""

from __future__ import annotations

from dataclasses import dataclass

from app.models.queues import OutstandingRequestsEntry, QueueEntry, UnsignedUsersEntry
from app.vocabulary import QueueType


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
# Refresh swap vs. every writer of a queue's entries (claims, completions, releases, sweeps),
# which take this per-queue lock shared while the swap takes it exclusively. The ids are frozen in
# the claim functions' migration; tests/test_migrations.py checks they agree.
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


# The leads of a queue type (``:queue_type``) that may be called now, past the cooling period
# (``:cooling`` minutes) and below the attempt caps (``:max_attempts_per_day``,
# ``:max_attempts_per_week``: app.rules.caps), in serving order, each with ``held`` (someone
# holds the lead now): what a population walks and what direct mode serves from. One
# definition, ``cq_candidates`` (migrations/sql/), which the planner inlines so the walk streams
# along the partial index ix_user_call_scores_population.
CANDIDATES_SQL = (
    "SELECT user_id, current_score, created_at, held FROM cq_candidates(:queue_type, :cooling,"
    " :max_attempts_per_day, :max_attempts_per_week)"
)
