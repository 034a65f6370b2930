"""A population's re-check of leads with no queue type (SPEC 3.2): up to ``RECHECK_BATCH``
active score rows whose ``current_queue_type`` is null, oldest ``last_queue_check`` first, are
classified on the replica, and those it now places in a queue are moved there with their audit
rows, so leads do not leak out of both queues for good."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from app.queues.transitions import RECLASSIFY_BATCH, Reclassification, reclassify
from app.replica.bulk import classify_in_sql
from app.replica.reader import Replica

_OLDEST_UNCLASSIFIED = text(
    "SELECT user_id FROM user_call_scores WHERE is_active AND current_queue_type IS NULL"
    " ORDER BY last_queue_check ASC NULLS FIRST, user_id LIMIT :n"
)
# The leads checked and left where they were are marked so (their moved neighbours got the mark
# with their move). A bookkeeping write that never waits: a row another transaction holds keeps
# its old mark and is simply re-checked sooner, so this statement adds no lock order of its own.
_CHECKED = text(
    "UPDATE user_call_scores SET last_queue_check = now() WHERE user_id IN"
    " (SELECT user_id FROM user_call_scores"
    "   WHERE user_id = ANY(:ids) AND current_queue_type IS NULL FOR UPDATE SKIP LOCKED)"
)


def recheck_unclassified(
    engine: Engine,
    replica: Replica,
    batch: int,
    run_id: uuid.UUID,
    assert_lock_held: Callable[[Connection], None],
) -> int:
    """Re-check up to ``batch`` leads; returns how many the replica placed in a queue. Nothing
    is locked while the replica is read; the changes commit in short batches."""
    if batch <= 0:
        return 0
    with engine.connect() as conn:
        user_ids = list(conn.execute(_OLDEST_UNCLASSIFIED, {"n": batch}).scalars())
        conn.rollback()
    if not user_ids:
        return 0
    verdicts = classify_in_sql(replica, user_ids)
    moved = [
        Reclassification(uid, str(v.queue_type), v.reason)
        for uid, v in verdicts.items()
        if v.queue_type is not None
    ]
    for start in range(0, len(user_ids), RECLASSIFY_BATCH):
        chunk = user_ids[start : start + RECLASSIFY_BATCH]
        in_chunk = set(chunk)
        with engine.begin() as conn:
            assert_lock_held(conn)
            reclassify(
                conn,
                None,
                [m for m in moved if m.user_id in in_chunk],
                source="recheck",
                run_id=run_id,
            )
            conn.execute(_CHECKED, {"ids": chunk})
    return len(moved)
