"""Changing a lead's queue type, always together with its audit row (SPEC 3.1)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text


@dataclass(frozen=True, slots=True)
class Reclassification:
    user_id: int
    to_queue_type: str | None
    reason: str


_RECLASSIFY = text(
    """
    WITH changes AS (
        SELECT * FROM unnest(CAST(:user_ids AS bigint[]), CAST(:to_types AS text[]),
                             CAST(:reasons AS text[])) AS c(user_id, to_type, reason)
    ), moved AS (
        UPDATE user_call_scores s
           SET current_queue_type = c.to_type, last_queue_check = now(), updated_at = now()
          FROM changes c
         WHERE s.user_id = c.user_id
           AND s.current_queue_type IS NOT DISTINCT FROM CAST(:from_type AS text)
           AND s.current_queue_type IS DISTINCT FROM c.to_type
        RETURNING s.user_id, c.to_type, c.reason
    )
    INSERT INTO queue_transitions
           (user_id, from_queue_type, to_queue_type, reason, source, agent_id, run_id)
    SELECT user_id, CAST(:from_type AS text), to_type, reason, :source, :agent_id, :run_id
      FROM moved
    """
)


def reclassify(
    conn: Connection,
    from_type: str | None,
    changes: Sequence[Reclassification],
    *,
    source: str,
    agent_id: int | None = None,
    run_id: uuid.UUID | None = None,
) -> int:
    """Move users out of ``from_type``; a row whose type changed meanwhile is left alone.

    Returns how many users moved. The guard on the old value means a concurrent outcome or
    another reclassification is never overwritten with a stale verdict.
    """
    if not changes:
        return 0
    # In user id order, the order every bulk writer of score rows locks them in (intake's
    # upsert too), so two of them meeting on the same rows queue up instead of deadlocking.
    changes = sorted(changes, key=lambda c: c.user_id)
    result = conn.execute(
        _RECLASSIFY,
        {
            "user_ids": [c.user_id for c in changes],
            "to_types": [c.to_queue_type for c in changes],
            "reasons": [c.reason for c in changes],
            "from_type": from_type,
            "source": source,
            "agent_id": agent_id,
            "run_id": run_id,
        },
    )
    return result.rowcount
