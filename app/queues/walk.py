"""A population's walk (SPEC 3.2): the candidates of one queue in serving order, classified on the
replica a batch at a time, until ``QUEUE_SIZE_LIMIT`` are kept.

The candidate query streams from a server-side cursor inside a read-only transaction; it holds a
snapshot but no row locks while the replica is consulted. Replica reads run in worker threads,
one batch ahead: before waiting for a batch's verdicts, the walk streams the next batch's
candidates and starts their read, which goes on while it sorts out the batch. The replica, the
store and this process work at once instead of in turns, on at most two replica connections (the
read waited for and the one ahead). A batch is read ahead only when the walk would still be short
of the limit even if it kept every candidate of the current one, so every batch read is one the
walk needs. A failed read raises when its batch's turn comes; the workers are gone when the walk
returns or raises.

People someone holds (``held``) are classified and kept in serving order too, but never counted
towards the limit: the swap puts them in the new snapshot only if they were given back meanwhile
(SPEC 8.1, nobody falls out of the queue).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Engine, text

from app.queues.kinds import CANDIDATES_SQL, QueueKind
from app.queues.transitions import Reclassification
from app.replica.bulk import classify_in_sql
from app.replica.classification import Verdict
from app.replica.reader import Replica
from app.rules import caps


@dataclass(frozen=True, slots=True)
class WalkLimits:
    queue_size_limit: int
    cooling_period_minutes: int
    max_attempts_per_day: int
    max_attempts_per_week: int


@dataclass(slots=True)
class Candidate:
    user_id: int
    score: int
    # Someone holds the lead now: classified, kept in serving order, never counted.
    held: bool = False


@dataclass(slots=True)
class Walk:
    # In serving order, held leads among them (``Candidate.held``).
    kept: list[tuple[Candidate, Verdict]] = field(default_factory=list)
    # Kept leads nobody holds: what the queue's size limit counts.
    counted: int = 0
    moved: list[Reclassification] = field(default_factory=list)
    eligible: int = 0
    missing: int = 0
    # The walk's snapshot time: anyone handed out since then is left out at the swap.
    started: datetime | None = None


# Candidates of one batch, in serving order, and their verdicts being read from the replica.
_Batch = tuple[list[Candidate], Future[dict[int, Verdict]]]


def walk(
    engine: Engine, replica: Replica, kind: QueueKind, limits: WalkLimits, skip: set[int]
) -> Walk:
    """Classify the queue's candidates in serving order until the limit is kept; leads in
    ``skip`` (moved by this run already) are passed over, and those this walk moves are added
    to it."""
    limit = limits.queue_size_limit
    found = Walk()
    with engine.connect() as conn:
        # The attempt caps' subquery lifts the plan's estimated cost over jit_above_cost, and
        # compiling it cost 0.3-0.7 s before the first row; the walk reads a few batches of an
        # index scan and stops, which JIT never repays (bench/caps_plan.py). Set before
        # streaming: a server-side cursor cannot carry a SET.
        conn.execute(text("SET LOCAL jit = off"))
        conn = conn.execution_options(stream_results=True, max_row_buffer=5000)
        found.started = conn.execute(text("SELECT now()")).scalar_one()
        result = conn.execute(
            text(CANDIDATES_SQL),
            {
                "queue_type": str(kind.queue_type),
                "cooling": limits.cooling_period_minutes,
                caps.DAY_PARAM: limits.max_attempts_per_day,
                caps.WEEK_PARAM: limits.max_attempts_per_week,
            },
        )
        reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="population-replica")

        def read_ahead(wanted: int) -> _Batch | None:
            # A quarter more than still wanted: most candidates are valid, and a few extra keep
            # the round trips down without classifying far beyond the limit.
            rows = result.fetchmany(min(replica.batch_size, wanted + wanted // 4 + 10))
            if not rows:
                return None
            batch = [Candidate(uid, score, held) for uid, score, _, held in rows if uid not in skip]
            return batch, reader.submit(classify_in_sql, replica, [c.user_id for c in batch])

        try:
            ahead = read_ahead(limit)
            while ahead is not None:
                batch, verdicts_read = ahead
                # Were every candidate of this batch kept, would the walk still be short?
                short = limit - found.counted - len(batch)
                ahead = read_ahead(short) if short > 0 else None
                _sort_out(found, kind, batch, verdicts_read.result(), limit)
                if ahead is None and found.counted < limit:
                    ahead = read_ahead(limit - found.counted)
        finally:
            # Waits for a read still running (each is bounded by the replica's timeouts).
            reader.shutdown(wait=True, cancel_futures=True)
            result.close()  # also when the replica fails mid-walk
        conn.rollback()
    skip.update(m.user_id for m in found.moved)
    return found


def _sort_out(
    found: Walk,
    kind: QueueKind,
    batch: list[Candidate],
    verdicts: dict[int, Verdict],
    limit: int,
) -> None:
    for cand in batch:
        verdict = verdicts[cand.user_id]
        if cand.held:
            # Not a candidate while held; the call in progress reclassifies them.
            if verdict.queue_type == kind.queue_type:
                found.kept.append((cand, verdict))
            continue
        found.eligible += 1
        if verdict.queue_type == kind.queue_type:
            if found.counted < limit:
                found.kept.append((cand, verdict))
                found.counted += 1
        else:
            found.missing += verdict.missing
            found.moved.append(
                Reclassification(
                    cand.user_id, verdict.queue_type and str(verdict.queue_type), verdict.reason
                )
            )
