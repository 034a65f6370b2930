"""Changing a lead's queue type, always together with its audit row (SPEC 3.1)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, text

# Reclassifications a population or discovery commits together: short transactions, so a large
# run never holds many score rows at once (SPEC 3.2: never inside the swap).
RECLASSIFY_BATCH = 500


@dataclass(frozen=True, slots=True)
class Reclassification:
    user_id: int
    to_queue_type: str | None
    reason: str


# cq_reclassify (the claim functions' migration): the update and its audit rows in one statement,
# also used by the claim and completion functions.
_RECLASSIFY = text(
    "SELECT cq_reclassify(CAST(:user_ids AS bigint[]), CAST(:to_types AS text[]),"
    " CAST(:reasons AS text[]), :from_type, :source, :agent_id, :run_id)"
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
    moved = conn.execute(
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
    ).scalar_one()
    return int(moved)
