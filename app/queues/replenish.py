"""The queue-level check (SPEC 3.2, ``REPLENISH_MIN_INTERVAL_MINUTES``): which queues running low
to refill now. Decided from the run history in the database, under the population lock, so two
processes checking at once cannot both refill, and the interval holds across restarts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, text

from app.queues.kinds import KINDS
from app.vocabulary import QueueType

# A queue with no pending entry at all may be refilled this often, whatever the interval says.
EMPTY_REFILL_SECONDS = 60


def replenish_decisions(
    engine: Engine, watermark: int, min_interval_minutes: int, *, separated_queues: bool
) -> dict[QueueType, dict[str, Any]]:
    """Per queue: its pending entries, the watermark, the seconds since its last population
    (any population of it starts the interval), and the action ("populate" or "none") with
    the reason."""
    decisions: dict[QueueType, dict[str, Any]] = {}
    with engine.connect() as conn:
        for queue_type, kind in KINDS.items():
            row = conn.execute(
                text(
                    f"SELECT (SELECT count(*) FROM {kind.table} WHERE status = 'pending')"
                    " AS pending,"
                    " (SELECT extract(epoch FROM now() - max(started_at))"
                    "    FROM population_run_queues WHERE queue_type = :q AND NOT dry_run"
                    "     AND status <> 'skipped') AS since_last"
                ),
                {"q": str(queue_type)},
            ).one()
            pending = int(row.pending)
            since = None if row.since_last is None else float(row.since_last)
            action, reason = "none", "at or above the low watermark"
            if not separated_queues:
                reason = "USE_SEPARATED_QUEUES is off"
            elif pending < watermark:
                if pending == 0 and (since is None or since >= EMPTY_REFILL_SECONDS):
                    action, reason = "populate", "the queue is empty"
                elif since is not None and since < min_interval_minutes * 60:
                    reason = (
                        f"below the low watermark, but populated {int(since)} s ago, within"
                        f" REPLENISH_MIN_INTERVAL_MINUTES ({min_interval_minutes})"
                    )
                else:
                    action, reason = "populate", "below the low watermark"
            decisions[queue_type] = {
                "pending": pending,
                "watermark": watermark,
                "seconds_since_last_population": None if since is None else int(since),
                "action": action,
                "reason": reason,
            }
    return decisions
