"""Population of the two queues (SPEC 3.2): one table-driven mechanism for both.

A run, for each queue:

1. **Walk** the candidates in serving order, classifying them on the replica a batch at a time,
   until ``QUEUE_SIZE_LIMIT`` are kept (app/queues/walk.py). Nothing is locked while the replica
   is read.
2. **Guard** against a lagging replica: when more than 20% of the classified candidates are unknown
   to it, the queue fails with no write at all.
3. **Reclassify** the candidates that no longer belong, in short committed batches, each change
   with its audit row (app/queues/transitions.py).
4. **Swap** the snapshot in one short transaction (app/queues/swap.py).

Then, once per run, the leads with no queue type are re-checked (app/queues/recheck.py). The run
and each queue's figures go to the run history (app/queues/runs.py); the queue-level check's
policy is app/queues/replenish.py.

Single flight: the whole run holds the session advisory lock ``POPULATION_LOCK_KEY`` on a direct
connection of its own, as a lease (app/locks.py); a trigger that cannot take it at once gets
PopulationRunning, and every write first checks that the lock is still held.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from app import metrics
from app.errors import PopulationLockLost, PopulationRunning, ReplicaLagging
from app.locks import HeldLock, RunLock
from app.logs import describe_error
from app.queues import runs
from app.queues.kinds import KINDS, POPULATION_LOCK_KEY, QueueKind
from app.queues.recheck import recheck_unclassified
from app.queues.replenish import replenish_decisions
from app.queues.runs import QueueReport, RunReport
from app.queues.swap import snapshot_counts, swap
from app.queues.transitions import RECLASSIFY_BATCH, Reclassification, reclassify
from app.queues.walk import WalkLimits, walk
from app.replica.reader import Replica
from app.vocabulary import QueueType

log = logging.getLogger(__name__)

MAX_MISSING_SHARE = 0.20
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

    @property
    def walk_limits(self) -> WalkLimits:
        return WalkLimits(
            self.queue_size_limit,
            self.cooling_period_minutes,
            self.max_attempts_per_day,
            self.max_attempts_per_week,
        )


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

    def run(
        self, *, trigger: str, queue: QueueType | None = None, dry_run: bool = False
    ) -> RunReport:
        with self._population_lock():
            selected = {queue} if queue else set(KINDS)
            return self._run_locked(trigger, queue, selected, dry_run)

    def replenish(
        self, *, watermark: int, min_interval_minutes: int, trigger: str = "queue-level-check"
    ) -> dict[str, Any]:
        """Repopulate the queues running low (SPEC: queue-level check), decided under the
        population lock (app/queues/replenish.py)."""
        with self._population_lock():
            decisions = replenish_decisions(
                self.engine,
                watermark,
                min_interval_minutes,
                separated_queues=self.options.use_separated_queues,
            )
            selected = {q for q, d in decisions.items() if d["action"] == "populate"}
            run = None
            if selected and self.options.use_separated_queues:
                only = next(iter(selected)) if len(selected) == 1 else None
                run = self._run_locked(trigger, only, selected, dry_run=False)
            return {
                "queues": {str(q): d for q, d in decisions.items()},
                "run": run.as_dict() if run else None,
            }

    # -- the run -------------------------------------------------------------------------------

    def _run_locked(
        self,
        trigger: str,
        queue: QueueType | None,
        selected: set[QueueType],
        dry_run: bool,
    ) -> RunReport:
        t0 = time.monotonic()
        run_id, started_at = runs.start_run(self.engine, trigger, queue, dry_run)
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
                recheck_unclassified(
                    self.engine,
                    self.replica,
                    self.options.recheck_batch,
                    run_id,
                    self._assert_lock_held,
                )
            except Exception as exc:  # the queues are already swapped; report, don't undo
                run_error = "re-check of unclassified leads failed: " + describe_error(exc)
                log.exception("population.recheck_failed", extra={"run_id": str(run_id)})
        duration_ms = int((time.monotonic() - t0) * 1000)
        finished_at = runs.finish_run(self.engine, run_id, reports, duration_ms, run_error)
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
            extra={"run_id": str(run_id), "success": report.success, "duration_ms": duration_ms},
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
            found = walk(self.engine, self.replica, kind, self.options.walk_limits, moved_this_run)
            report.eligible = found.eligible
            report.invalid = len(found.moved)
            if found.eligible and found.missing > MAX_MISSING_SHARE * found.eligible:
                raise ReplicaLagging(
                    f"{found.missing} of {found.eligible} candidates are missing from the"
                    f" replica (more than {int(MAX_MISSING_SHARE * 100)}%): it may be lagging;"
                    " the queue was left as it was"
                )
            if dry_run:
                report.populated = found.counted
                report.removed, report.kept_assigned = snapshot_counts(self.engine, kind)
            else:
                self._reclassify(kind, found.moved, run_id)
                report.removed, report.kept_assigned, report.populated = swap(
                    self.engine, kind, found, started_at, self._assert_lock_held
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
        runs.record_queue(self.engine, run_id, kind.queue_type, report, dry_run, q_started)
        _observe(kind, report, dry_run)
        log.info(
            "population.queue_done",
            extra={"run_id": str(run_id), "queue_type": str(kind.queue_type), **asdict(report)},
        )
        return report

    def _reclassify(
        self, kind: QueueKind, moved: Sequence[Reclassification], run_id: uuid.UUID
    ) -> None:
        """The walk's reclassifications, committed in short batches before the swap."""
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

    def _db_now(self) -> datetime:
        with self.engine.connect() as conn:
            return conn.execute(text("SELECT clock_timestamp()")).scalar_one()
