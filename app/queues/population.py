"""Population of the two queues (SPEC 3.2): one table-driven mechanism for both.

A run, for each queue:

1. **Walk** the candidates in serving order with a streaming cursor, classifying them on the
   replica one batch at a time (one statement per batch evaluating the rule in SQL, see
   app/replica/bulk.py; the next batch is read while the current one is sorted out), until
   ``QUEUE_SIZE_LIMIT`` users are kept. Nothing is locked while the replica is read.
2. **Guard** against a lagging replica: when more than 20% of the classified candidates are unknown
   to it, the queue fails with no write at all.
3. **Reclassify** the candidates that no longer belong, in short committed batches, each change with
   its audit row.
4. **Swap** the snapshot in one short transaction: stage the new entries in a temporary table,
   take the queue's swap lock exclusively (a claim that finds no entry to take waits for it
   instead of answering 204 while the swap holds every old entry), drop the old snapshot's
   unassigned entries and insert the new ones, leaving out users handed out meanwhile. MVCC makes
   the switch atomic: other connections see the old set of pending entries until the commit, then
   the new one, never an empty or partial queue.

Single flight: the whole run holds the session advisory lock ``POPULATION_LOCK_KEY`` on a direct
connection of its own, as a lease (app/locks.py); a trigger that cannot take
it at once gets PopulationRunning.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from app import metrics
from app.errors import CallqueueError, PopulationLockLost, PopulationRunning, ReplicaLagging
from app.locks import HeldLock, RunLock
from app.queues.kinds import (
    CANDIDATES_SQL,
    KINDS,
    POPULATION_LOCK_KEY,
    SWAP_LOCK_KEY,
    QueueKind,
    QueueType,
    queue_reason,
)
from app.queues.leases import sweep_expired_leases
from app.queues.transitions import Reclassification, reclassify
from app.replica.bulk import classify_in_sql
from app.replica.classification import Verdict
from app.replica.reader import Replica
from app.rules import caps

log = logging.getLogger(__name__)

MAX_MISSING_SHARE = 0.20
EMPTY_REFILL_SECONDS = 60
RECLASSIFY_BATCH = 500
SWAP_LOCK_TIMEOUT = "15s"
DEFAULT_LEASE_SECONDS = 60


@dataclass(frozen=True, slots=True)
class PopulationOptions:
    queue_size_limit: int
    cooling_period_minutes: int
    recheck_batch: int
    population_interval_minutes: int
    # Attempt caps (SPEC 7.3): users at a cap are not candidates.
    max_attempts_per_day: int
    max_attempts_per_week: int
    use_separated_queues: bool = True


@dataclass(slots=True)
class QueueReport:
    status: str = "skipped"
    eligible: int = 0
    invalid: int = 0
    populated: int = 0
    removed: int = 0
    kept_assigned: int = 0
    duration_ms: int = 0
    error: str | None = None


@dataclass(slots=True)
class RunReport:
    run_id: uuid.UUID
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    next_run_at: datetime
    queues: dict[QueueType, QueueReport] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(q.status != "failed" for q in self.queues.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "run_id": str(self.run_id),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_ms": self.duration_ms,
            "next_run_at": self.next_run_at.isoformat(),
            "queues": {str(t): asdict(self.queues[t]) for t in QueueType},
        }


@dataclass(slots=True)
class _Candidate:
    user_id: int
    score: int
    # Someone holds the lead now (SPEC 8.1): classified, staged in serving order and put in
    # the snapshot only if given back before the swap; never counted towards the queue's size.
    held: bool = False


# Candidates of one batch, in serving order, and their verdicts being read from the replica.
_Batch = tuple[list[_Candidate], Future[dict[int, Verdict]]]


@dataclass(slots=True)
class _Walk:
    # In serving order, held leads among them (``_Candidate.held``).
    kept: list[tuple[_Candidate, Verdict]] = field(default_factory=list)
    # Kept leads nobody holds: what the queue's size limit counts.
    counted: int = 0
    moved: list[Reclassification] = field(default_factory=list)
    eligible: int = 0
    missing: int = 0
    # The walk's snapshot time: anyone handed out since then is left out at the swap.
    started: datetime | None = None


def describe_error(exc: BaseException) -> str:
    """A one-line cause for the run history and the cron report: no values, no secrets."""
    if isinstance(exc, CallqueueError):
        return exc.detail
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        first_line = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else ""
        return f"database error ({type(exc.orig).__name__}): {first_line}"[:500]
    return f"unexpected error ({type(exc).__name__})"


def _observe(kind: QueueKind, report: QueueReport, dry_run: bool) -> None:
    queue_type = str(kind.queue_type)
    metrics.POPULATIONS.labels(queue_type, report.status, str(dry_run).lower()).inc()
    metrics.POPULATION_SECONDS.labels(queue_type).observe(report.duration_ms / 1000)
    if not dry_run:
        for figure in ("eligible", "invalid", "populated", "removed", "kept_assigned"):
            metrics.POPULATION_ROWS.labels(queue_type, figure).inc(getattr(report, figure))


def population_lock(direct_engine: Engine, lease_seconds: float) -> RunLock:
    """The contract's single flight (SPEC 3.2): the advisory lock 1667329132, on a connection
    that bypasses any transaction pooler."""
    return RunLock(
        direct_engine,
        POPULATION_LOCK_KEY,
        lease_seconds,
        name="population",
        busy=PopulationRunning,
        lost=PopulationLockLost,
    )


class Population:
    def __init__(
        self,
        engine: Engine,
        replica: Replica,
        options: PopulationOptions,
        lock: RunLock | None = None,
    ) -> None:
        self.engine = engine
        self.replica = replica
        self.options = options
        # Without a lock of its own (tests, benchmarks), the lock is held on the store engine.
        self.lock = lock or population_lock(engine, DEFAULT_LEASE_SECONDS)
        self._held: HeldLock | None = None

    # -- the run -------------------------------------------------------------------------------

    def run(
        self, *, trigger: str, queue: QueueType | None = None, dry_run: bool = False
    ) -> RunReport:
        with self._population_lock():
            selected = {queue} if queue else set(KINDS)
            return self._run_locked(trigger, queue, selected, dry_run)

    def replenish(
        self, *, watermark: int, min_interval_minutes: int, trigger: str = "queue-level-check"
    ) -> dict[str, Any]:
        """Repopulate the queues running low (SPEC: queue-level check).

        The decision is taken under the population lock, from the run history in the database,
        so two processes checking at once cannot both refill, and the interval holds across
        restarts. A queue with no pending entry at all may be refilled once a minute regardless.
        """
        with self._population_lock():
            decisions = self._replenish_decisions(watermark, min_interval_minutes)
            selected = {q for q, d in decisions.items() if d["action"] == "populate"}
            run = None
            if selected and self.options.use_separated_queues:
                only = next(iter(selected)) if len(selected) == 1 else None
                run = self._run_locked(trigger, only, selected, dry_run=False)
            return {
                "queues": {str(q): d for q, d in decisions.items()},
                "run": run.as_dict() if run else None,
            }

    def _replenish_decisions(
        self, watermark: int, min_interval_minutes: int
    ) -> dict[QueueType, dict[str, Any]]:
        decisions: dict[QueueType, dict[str, Any]] = {}
        with self.engine.connect() as conn:
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
                if not self.options.use_separated_queues:
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

    def _run_locked(
        self,
        trigger: str,
        queue: QueueType | None,
        selected: set[QueueType],
        dry_run: bool,
    ) -> RunReport:
        t0 = time.monotonic()
        run_id, started_at = self._start_run(trigger, queue, dry_run)
        log.info(
            "population.started",
            extra={"run_id": str(run_id), "trigger": trigger, "dry_run": dry_run},
        )
        reports: dict[QueueType, QueueReport] = {}
        # Leads this run moves between queues become candidates from the next run on, as
        # the re-checked ones do; it also keeps a dry run's figures equal to a real run's.
        moved_this_run: set[int] = set()
        for queue_type, kind in KINDS.items():
            if not self.options.use_separated_queues or queue_type not in selected:
                reports[queue_type] = QueueReport(status="skipped")
            else:
                reports[queue_type] = self._populate(
                    kind, run_id, started_at, dry_run, moved_this_run
                )
        run_error = None
        if not dry_run and self.options.use_separated_queues:
            try:
                self._recheck_unclassified(run_id)
            except Exception as exc:  # the queues are already swapped; report, don't undo
                run_error = "re-check of unclassified leads failed: " + describe_error(exc)
                log.exception("population.recheck_failed", extra={"run_id": str(run_id)})
        duration_ms = int((time.monotonic() - t0) * 1000)
        finished_at = self._finish_run(run_id, reports, dry_run, duration_ms, run_error)
        report = RunReport(
            run_id=run_id,
            started_at=started_at,
            finished_at=finished_at,
            duration_ms=duration_ms,
            next_run_at=started_at + timedelta(minutes=self.options.population_interval_minutes),
            queues=reports,
        )
        log.info(
            "population.finished",
            extra={
                "run_id": str(run_id),
                "success": report.success,
                "duration_ms": duration_ms,
            },
        )
        return report

    @contextmanager
    def _population_lock(self) -> Iterator[None]:
        """Hold the cluster-wide population lock on a dedicated connection for the whole run."""
        with self.lock.hold() as held:
            self._held = held
            try:
                yield
            finally:
                self._held = None

    def _assert_lock_held(self, conn: Connection) -> None:
        """Before any write: if the lock's connection died or its lease ran out, another run may
        have started, and this one must not write anything more."""
        if self._held is None:
            raise PopulationLockLost("the population lock is not held; this run stopped writing")
        self._held.assert_held(conn)

    def _start_run(
        self, trigger: str, queue: QueueType | None, dry_run: bool
    ) -> tuple[uuid.UUID, datetime]:
        with self.engine.begin() as conn:
            # We hold the lock, so any run still marked running died with its process.
            conn.execute(
                text(
                    "UPDATE population_runs SET status = 'failed', finished_at = now(),"
                    " error = 'interrupted: the process running it stopped before it finished'"
                    " WHERE status = 'running'"
                )
            )
            row = conn.execute(
                text(
                    "INSERT INTO population_runs (trigger, dry_run, queue_filter)"
                    " VALUES (:trigger, :dry_run, :queue) RETURNING id, started_at"
                ),
                {"trigger": trigger, "dry_run": dry_run, "queue": queue and str(queue)},
            ).one()
        return row.id, row.started_at

    def _finish_run(
        self,
        run_id: uuid.UUID,
        reports: dict[QueueType, QueueReport],
        dry_run: bool,
        duration_ms: int,
        run_error: str | None,
    ) -> datetime:
        failed = [f"{t}: {r.error}" for t, r in reports.items() if r.status == "failed"]
        errors = [*failed, *([run_error] if run_error else [])]
        with self.engine.begin() as conn:
            finished: datetime | None = conn.execute(
                text(
                    "UPDATE population_runs SET status = :status, finished_at = now(),"
                    " duration_ms = :duration_ms, error = :error"
                    # A run another process already marked interrupted keeps that mark.
                    " WHERE id = :id AND status = 'running'"
                    " RETURNING finished_at"
                ),
                {
                    "id": run_id,
                    "status": "failed" if failed else "succeeded",
                    "duration_ms": duration_ms,
                    "error": "; ".join(errors) or None,
                },
            ).scalar()
            if finished is None:
                finished = conn.execute(text("SELECT now()")).scalar_one()
            return finished

    # -- one queue -----------------------------------------------------------------------------

    def _populate(
        self,
        kind: QueueKind,
        run_id: uuid.UUID,
        started_at: datetime,
        dry_run: bool,
        moved_this_run: set[int],
    ) -> QueueReport:
        t0 = time.monotonic()
        q_started = self._db_now()
        report = QueueReport(status="succeeded")
        try:
            walk = self._walk(kind, moved_this_run)
            report.eligible = walk.eligible
            report.invalid = len(walk.moved)
            if walk.eligible and walk.missing > MAX_MISSING_SHARE * walk.eligible:
                raise ReplicaLagging(
                    f"{walk.missing} of {walk.eligible} candidates are missing from the replica"
                    f" (more than {int(MAX_MISSING_SHARE * 100)}%): it may be lagging; the"
                    " queue was left as it was"
                )
            if dry_run:
                report.populated = walk.counted
                report.removed, report.kept_assigned = self._snapshot_counts(kind)
            else:
                self._apply_reclassifications(kind, walk.moved, run_id)
                report.removed, report.kept_assigned, report.populated = self._swap(
                    kind, walk, started_at
                )
        except Exception as exc:
            report.status = "failed"
            report.error = describe_error(exc)
            log.warning(
                "population.queue_failed",
                extra={
                    "run_id": str(run_id),
                    "queue_type": str(kind.queue_type),
                    "error": report.error,
                },
            )
        report.duration_ms = int((time.monotonic() - t0) * 1000)
        self._record_queue(run_id, kind, report, dry_run, q_started)
        _observe(kind, report, dry_run)
        log.info(
            "population.queue_done",
            extra={"run_id": str(run_id), "queue_type": str(kind.queue_type), **asdict(report)},
        )
        return report

    def _walk(self, kind: QueueKind, skip: set[int]) -> _Walk:
        """Classify candidates in serving order until the limit is reached.

        The candidate query streams from a server-side cursor inside a read-only transaction; it
        holds a snapshot but no row locks while the replica is consulted.

        Replica reads run in worker threads, one batch ahead: before waiting for a batch's
        verdicts, this thread streams the next batch's candidates and starts their read, which
        goes on while it sorts out the batch. The replica, the store and this process work at
        once instead of in turns, on at most two replica connections (the read waited for and
        the one ahead). A batch is read ahead only when the walk would still be short of the
        limit even if it kept every candidate of the current one, so every batch read is one the
        walk needs. A failed read raises here, when its batch's turn comes, as it did when reads
        ran in this thread; the workers are gone when the walk returns or raises.
        """
        limit = self.options.queue_size_limit
        walk = _Walk()
        candidates = text(CANDIDATES_SQL)
        with self.engine.connect() as conn:
            # The attempt caps' subquery lifts the plan's estimated cost over jit_above_cost,
            # and compiling it cost 0.3-0.7 s before the first row; the walk reads a few batches
            # of an index scan and stops, which JIT never repays (bench/caps_plan.py). Set
            # before streaming: a server-side cursor cannot carry a SET.
            conn.execute(text("SET LOCAL jit = off"))
            conn = conn.execution_options(stream_results=True, max_row_buffer=5000)
            walk.started = conn.execute(text("SELECT now()")).scalar_one()
            result = conn.execute(
                candidates,
                {
                    "queue_type": str(kind.queue_type),
                    "cooling": self.options.cooling_period_minutes,
                    caps.DAY_PARAM: self.options.max_attempts_per_day,
                    caps.WEEK_PARAM: self.options.max_attempts_per_week,
                },
            )
            reader = ThreadPoolExecutor(max_workers=2, thread_name_prefix="population-replica")

            def read_ahead(wanted: int) -> _Batch | None:
                # A quarter more than still wanted: most candidates are valid, and a few extra
                # keep the round trips down without classifying far beyond the limit.
                rows = result.fetchmany(min(self.replica.batch_size, wanted + wanted // 4 + 10))
                if not rows:
                    return None
                batch = [
                    _Candidate(uid, score, held) for uid, score, _, held in rows if uid not in skip
                ]
                ids = [c.user_id for c in batch]
                return batch, reader.submit(classify_in_sql, self.replica, ids)

            try:
                ahead = read_ahead(limit)
                while ahead is not None:
                    batch, verdicts_read = ahead
                    # Were every candidate of this batch kept, would the walk still be short?
                    short = limit - walk.counted - len(batch)
                    ahead = read_ahead(short) if short > 0 else None
                    verdicts = verdicts_read.result()
                    for cand in batch:
                        verdict = verdicts[cand.user_id]
                        if cand.held:
                            # Not a candidate while held; the call in progress reclassifies.
                            if verdict.queue_type == kind.queue_type:
                                walk.kept.append((cand, verdict))
                            continue
                        walk.eligible += 1
                        if verdict.queue_type == kind.queue_type:
                            if walk.counted < limit:
                                walk.kept.append((cand, verdict))
                                walk.counted += 1
                        else:
                            walk.missing += verdict.missing
                            walk.moved.append(
                                Reclassification(
                                    cand.user_id,
                                    verdict.queue_type and str(verdict.queue_type),
                                    verdict.reason,
                                )
                            )
                    if ahead is None and walk.counted < limit:
                        ahead = read_ahead(limit - walk.counted)
            finally:
                # Waits for a read still running (each is bounded by the replica's timeouts).
                reader.shutdown(wait=True, cancel_futures=True)
                result.close()  # also when the replica fails mid-walk
            conn.rollback()
        skip.update(m.user_id for m in walk.moved)
        return walk

    def _apply_reclassifications(
        self, kind: QueueKind, moved: Sequence[Reclassification], run_id: uuid.UUID
    ) -> None:
        for start in range(0, len(moved), RECLASSIFY_BATCH):
            with self.engine.begin() as conn:
                self._assert_lock_held(conn)
                reclassify(
                    conn,
                    str(kind.queue_type),
                    moved[start : start + RECLASSIFY_BATCH],
                    source="population",
                    run_id=run_id,
                )

    def _entry_rows(
        self, kind: QueueKind, kept: Sequence[tuple[_Candidate, Verdict]]
    ) -> Iterator[tuple[Any, ...]]:
        for position, (cand, verdict) in enumerate(kept, start=1):
            fields = verdict.entry_fields
            yield (
                position,
                cand.user_id,
                fields.get("claim_id"),
                cand.score,
                queue_reason(kind, cand.score),
                *(fields[c] for c in kind.detail_columns),
            )

    def _swap(self, kind: QueueKind, walk: _Walk, available_from: datetime) -> tuple[int, int, int]:
        """Replace the queue's snapshot atomically; returns (removed, kept_assigned, populated).

        MVCC makes the switch atomic: other connections see the old set of pending entries
        until the commit, then the new one. The queue's swap lock, taken exclusively, is for
        claims that find no entry to take (the DELETE below holds every old one): they wait for
        it and look again in the new snapshot instead of answering "empty". Nothing else waits
        for it, and the swap waits for nothing but row locks: an entry a claim holds through its
        replica read is deleted once that claim is done with it (or kept, now assigned); an
        entry given back meanwhile (a release, a sweep) stays pending where it is, and the
        insert leaves its user alone.

        Left out of the new snapshot: anyone busy now (``cq_busy``: a live hand-out, an open
        callback, which is then their only way back), handed out or called since the walk
        began (the walk saw them as candidates, but they have been dealt with since), or whose
        score row no longer puts them in this queue now. Held leads the walk staged are in it
        when they were given back in between (SPEC 8.1: nobody falls out of the queue).
        """
        kept = walk.kept
        table = kind.table
        columns = ", ".join(
            ("user_id", "claim_id", "priority_score", "queue_reason", *kind.detail_columns)
        )
        with self.engine.begin() as conn:
            conn.execute(text(f"SET LOCAL lock_timeout = '{SWAP_LOCK_TIMEOUT}'"))
            conn.execute(
                text(
                    f"CREATE TEMP TABLE cq_stage ON COMMIT DROP AS"
                    f" SELECT 0 AS position, {columns} FROM {table} WITH NO DATA"
                )
            )
            self._copy_rows(conn, "cq_stage", f"position, {columns}", self._entry_rows(kind, kept))
            conn.execute(
                text("SELECT pg_advisory_xact_lock(:key, :id)"),
                {"key": SWAP_LOCK_KEY, "id": kind.swap_lock_id},
            )
            self._assert_lock_held(conn)
            sweep_expired_leases(conn)
            removed = conn.execute(text(f"DELETE FROM {table} WHERE status <> 'assigned'")).rowcount
            conn.execute(
                text(
                    f"""
                    INSERT INTO {table} ({columns}, queue_position, status, available_from)
                    SELECT {", ".join(f"s.{c}" for c in columns.split(", "))},
                           row_number() OVER (ORDER BY s.position), 'pending', :available_from
                      FROM cq_stage s
                      JOIN user_call_scores sc ON sc.user_id = s.user_id
                     WHERE sc.is_active AND sc.current_queue_type = :queue_type
                       AND (sc.next_call_after IS NULL OR sc.next_call_after <= now())
                       AND NOT EXISTS (SELECT 1 FROM cq_busy b WHERE b.user_id = s.user_id)
                       AND NOT EXISTS (SELECT 1 FROM assignments a
                                        WHERE a.user_id = s.user_id
                                          AND (a.assigned_at >= :built_since
                                               OR (a.status = 'completed'
                                                   AND a.finished_at >= :built_since)))
                       AND NOT EXISTS (SELECT 1 FROM {table} e
                                        WHERE e.user_id = s.user_id
                                          AND e.status IN ('pending', 'assigned'))
                    ON CONFLICT (user_id) WHERE status IN ('pending', 'assigned') DO NOTHING
                    """
                ),
                {
                    "available_from": available_from,
                    "built_since": walk.started,
                    "queue_type": str(kind.queue_type),
                },
            )
            # The new snapshot as it stands: its pending entries (an entry given back during
            # the swap among them) and the live calls carried over.
            populated, kept_assigned = conn.execute(
                text(
                    f"SELECT count(*) FILTER (WHERE status = 'pending'),"
                    f" count(*) FILTER (WHERE status = 'assigned') FROM {table}"
                )
            ).one()
        return removed, int(kept_assigned), int(populated)

    @staticmethod
    def _copy_rows(
        conn: Connection, table: str, columns: str, rows: Iterator[tuple[Any, ...]]
    ) -> None:
        """Binary COPY: about half the client time of text COPY at 100,000 rows, and psycopg
        encodes a list for a jsonb column itself. Binary needs every column's exact type; the
        table's catalog entry gives them."""
        types: dict[str, int] = dict(
            conn.execute(
                text(
                    "SELECT attname, atttypid::int FROM pg_attribute"
                    " WHERE attrelid = CAST(:table AS regclass) AND attnum > 0"
                ),
                {"table": table},
            ).all()
        )
        raw = conn.connection.driver_connection
        statement = f"COPY {table} ({columns}) FROM STDIN (FORMAT BINARY)"
        with raw.cursor() as cur, cur.copy(statement) as copy:  # type: ignore[union-attr]
            copy.set_types([types[c] for c in columns.split(", ")])
            for row in rows:
                copy.write_row(row)

    def _db_now(self) -> datetime:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT clock_timestamp()")).scalar_one()

    def _snapshot_counts(self, kind: QueueKind) -> tuple[int, int]:
        """What a swap would drop and keep, counting an entry whose lease ran out as dropped,
        as the swap's sweep would make it."""
        with self.engine.connect() as conn:
            row = conn.execute(
                text(
                    f"""
                    SELECT count(*) FILTER (WHERE NOT live) AS removed,
                           count(*) FILTER (WHERE live) AS assigned
                      FROM (SELECT e.status = 'assigned' AND NOT EXISTS (
                                   SELECT 1 FROM assignments a
                                    WHERE a.queue_entry_id = e.id AND a.status = 'active'
                                      AND a.lease_expires_at <= now()) AS live
                              FROM {kind.table} e) AS snapshot
                    """
                )
            ).one()
        return int(row.removed), int(row.assigned)

    def _record_queue(
        self,
        run_id: uuid.UUID,
        kind: QueueKind,
        report: QueueReport,
        dry_run: bool,
        started_at: datetime,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    """
                    INSERT INTO population_run_queues
                        (run_id, queue_type, status, dry_run, eligible, invalid, populated,
                         removed, kept_assigned, duration_ms, error, started_at, finished_at)
                    VALUES (:run_id, :queue_type, :status, :dry_run, :eligible, :invalid,
                            :populated, :removed, :kept_assigned, :duration_ms, :error,
                            :started_at, now())
                    """
                ),
                {
                    "run_id": run_id,
                    "queue_type": str(kind.queue_type),
                    "dry_run": dry_run,
                    "started_at": started_at,
                    **asdict(report),
                },
            )

    # -- leads with no queue type ---------------------------------------------------------------

    def _recheck_unclassified(self, run_id: uuid.UUID) -> int:
        """Give leads that fell out of both queues a way back in (SPEC 3.2)."""
        if self.options.recheck_batch <= 0:
            return 0
        with self.engine.connect() as conn:
            user_ids = list(
                conn.execute(
                    text(
                        "SELECT user_id FROM user_call_scores"
                        " WHERE is_active AND current_queue_type IS NULL"
                        " ORDER BY last_queue_check ASC NULLS FIRST, user_id LIMIT :n"
                    ),
                    {"n": self.options.recheck_batch},
                ).scalars()
            )
            conn.rollback()
        if not user_ids:
            return 0
        verdicts = classify_in_sql(self.replica, user_ids)
        moved = [
            Reclassification(uid, str(v.queue_type), v.reason)
            for uid, v in verdicts.items()
            if v.queue_type is not None
        ]
        for start in range(0, len(user_ids), RECLASSIFY_BATCH):
            chunk = user_ids[start : start + RECLASSIFY_BATCH]
            with self.engine.begin() as conn:
                self._assert_lock_held(conn)
                conn.execute(
                    text(
                        "UPDATE user_call_scores SET last_queue_check = now()"
                        " WHERE user_id = ANY(:ids) AND current_queue_type IS NULL"
                    ),
                    {"ids": chunk},
                )
                in_chunk = set(chunk)
                reclassify(
                    conn,
                    None,
                    [m for m in moved if m.user_id in in_chunk],
                    source="recheck",
                    run_id=run_id,
                )
        return len(moved)
