"""Discovery (SPEC 7.1): leads arrive by themselves from the claims platform's replica.

A **pass** reads, in batches, the replica's users, claims and requirements created since the
watermark minus ``DISCOVERY_LOOKBACK_MINUTES`` (a replica that lags by up to that much loses
nothing), classifies the users they belong to by the one rule (the replica evaluates it in SQL,
``app/replica/bulk.py``), creates a score row (score 0, active) for each user who has none and
belongs in a queue, and reclassifies existing rows whose type differs, with audit rows (source
``discovery``). Claims are read as well as users and requirements: a user whose first claim
arrives hours after signing up would otherwise never be found. With no watermark yet (a first
run), the pass walks every user instead, which classifies everyone; claims and requirements add
nothing then and are not read.

Each table is walked in primary-key order (``id > last id ORDER BY id LIMIT batch``), so a batch
costs two replica statements (the scan and the classification) whatever the number of users in
it, the reads need no index on ``created_at`` (one helps), and a batch's rows are known exactly.
The replica is read one batch ahead in a worker thread while the store writes the current one.

**Resumable, no gap, no duplicate.** Each batch commits its rows together with the pass's
position (table, last id) in ``discovery_state``; a run killed anywhere resumes after the last
committed batch, and a batch that did not commit is done again (its creations skip the rows
that exist, its reclassifications compare-and-set). The watermark moves only when
a pass has committed its last batch, to the newest ``created_at`` the pass saw, capped at the
pass's start on the database clock (rows created during the pass are read again next time) and
never backwards.

Single flight: the run holds the session advisory lock ``DISCOVERY_LOCK_KEY`` on a connection of
its own; a second trigger gets DiscoveryRunning (409, exit 75) at once.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, func, select, text

from app import metrics
from app.db import pg_int_array
from app.errors import DiscoveryLockLost, DiscoveryRunning
from app.intake.rows import create_rows, refuse_erased
from app.locks import HeldLock, RunLock
from app.logs import describe_error
from app.queues.transitions import Reclassification, reclassify
from app.replica.bulk import classify_in_sql
from app.replica.classification import Verdict
from app.replica.reader import Replica
from app.replica.schema import claim_requirements, claims, users
from app.timestamps import utc

log = logging.getLogger(__name__)

# 'disc' in ASCII: discovery's own single-flight key, beside the population's 'call'.
DISCOVERY_LOCK_KEY = 1684632419
PHASES = ("users", "claims", "requirements")
FIRST_ID = -(2**63)  # below any bigint id: a phase not started yet


@dataclass(frozen=True, slots=True)
class DiscoveryOptions:
    lookback_minutes: int
    # Replica rows per scan statement and per store transaction (DISCOVERY_BATCH_SIZE); their
    # users are classified in one statement.
    batch_size: int
    # How often a long pass logs its progress.
    progress_seconds: float = 5.0


@dataclass(slots=True)
class DiscoveryReport:
    run_id: uuid.UUID
    success: bool = True
    scanned_users: int = 0
    scanned_claims: int = 0
    scanned_requirements: int = 0
    created: int = 0
    reclassified: int = 0
    watermark: datetime | None = None
    duration_ms: int = 0
    error: str | None = None
    full_walk: bool = False
    resumed: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The contract's report (SPEC 7.1), exactly these keys."""
        return {
            "success": self.success,
            "run_id": str(self.run_id),
            "scanned_users": self.scanned_users,
            "scanned_requirements": self.scanned_requirements,
            "created": self.created,
            "reclassified": self.reclassified,
            "watermark": self.watermark.isoformat() if self.watermark else None,
            "duration_ms": self.duration_ms,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class _Pass:
    since: datetime | None  # None: a full walk
    started_at: datetime
    phase: str
    after_id: int
    max_seen: datetime | None
    users_max_id: int | None
    resumed: bool

    @property
    def phases(self) -> tuple[str, ...]:
        walked = PHASES if self.since is not None else ("users",)
        return walked[walked.index(self.phase) :]


@dataclass(slots=True)
class _Batch:
    """One scan statement's rows and the verdicts of the users behind them."""

    phase: str
    rows: int
    last_id: int
    max_seen: datetime | None
    verdicts: dict[int, Verdict]
    full: bool


@dataclass(slots=True)
class _Progress:
    started: float = field(default_factory=time.monotonic)
    logged: float = field(default_factory=time.monotonic)


# -- replica scans ------------------------------------------------------------------------------


def _scan(phase: str, since: bool) -> Any:
    """Rows of one table after ``:after`` in primary-key order: (row id, user id, created_at)."""
    query: Any
    if phase == "users":
        query = select(users.c.id, users.c.id, users.c.created_at)
        row_id, created = users.c.id, users.c.created_at
    elif phase == "claims":
        query = select(claims.c.id, claims.c.user_id, claims.c.created_at)
        row_id, created = claims.c.id, claims.c.created_at
    else:
        query = select(
            claim_requirements.c.id, claims.c.user_id, claim_requirements.c.created_at
        ).join(claims, claims.c.id == claim_requirements.c.claim_id)
        row_id, created = claim_requirements.c.id, claim_requirements.c.created_at
    query = query.where(row_id > bindparam("after"))
    if since:
        query = query.where(created >= bindparam("since"))
    return query.order_by(row_id).limit(bindparam("n"))


_SCANS = {(phase, since): _scan(phase, since) for phase in PHASES for since in (True, False)}
_USERS_MAX_ID = select(func.max(users.c.id))


# -- store statements ---------------------------------------------------------------------------

_ENSURE_STATE = text("INSERT INTO discovery_state (id) VALUES (1) ON CONFLICT DO NOTHING")
_STATE = text(
    "SELECT watermark, pass_since, pass_started_at, pass_phase, pass_after_id, pass_max_seen,"
    " pass_users_max_id, now() AS now,"
    " watermark - make_interval(mins => :lookback) AS since"
    " FROM discovery_state WHERE id = 1"
)
_BEGIN_PASS = text(
    "UPDATE discovery_state SET pass_since = :since, pass_started_at = now(),"
    " pass_phase = 'users', pass_after_id = :after, pass_max_seen = NULL,"
    " pass_users_max_id = :users_max_id, updated_at = now() WHERE id = 1"
    " RETURNING pass_started_at"
)
_ADVANCE = text(
    "UPDATE discovery_state SET pass_phase = :phase, pass_after_id = :after,"
    " pass_max_seen = GREATEST(pass_max_seen, CAST(:max_seen AS timestamptz)), updated_at = now()"
    " WHERE id = 1"
)
# The pass is complete: move the watermark to the newest created_at it saw, never past the pass's
# start, never backwards. A pass that saw nothing leaves it: while a replica's replication is
# stalled, nothing arrives, and the watermark must wait for what will.
_END_PASS = text(
    "UPDATE discovery_state"
    " SET watermark = CASE WHEN pass_max_seen IS NULL THEN watermark"
    " ELSE GREATEST(watermark, LEAST(pass_max_seen, pass_started_at)) END,"
    " pass_since = NULL, pass_started_at = NULL, pass_phase = NULL, pass_after_id = NULL,"
    " pass_max_seen = NULL, pass_users_max_id = NULL, updated_at = now()"
    " WHERE id = 1 RETURNING watermark"
)
_EXISTING_TYPES = text(
    "SELECT user_id, current_queue_type FROM user_call_scores"
    " WHERE user_id = ANY(CAST(:ids AS bigint[]))"
)
_RUN_FIGURES = text(
    "UPDATE discovery_runs SET scanned_users = scanned_users + :users,"
    " scanned_claims = scanned_claims + :claims,"
    " scanned_requirements = scanned_requirements + :requirements,"
    " created = created + :created, reclassified = reclassified + :reclassified"
    " WHERE id = :run_id"
)


def discovery_lock(direct_engine: Engine, lease_seconds: float) -> RunLock:
    """Discovery's own single flight (SPEC 7.1): like the population's, another key."""
    return RunLock(
        direct_engine,
        DISCOVERY_LOCK_KEY,
        lease_seconds,
        name="discovery",
        busy=DiscoveryRunning,
        lost=DiscoveryLockLost,
    )


class Discovery:
    def __init__(
        self, engine: Engine, replica: Replica, options: DiscoveryOptions, lock: RunLock
    ) -> None:
        self.engine = engine
        self.replica = replica
        self.options = options
        self.lock = lock
        self._held: HeldLock | None = None
        self._mysql = replica.engine.dialect.name != "postgresql"

    def run(self, *, trigger: str) -> DiscoveryReport:
        with self.lock.hold() as held:
            self._held = held
            try:
                return self._run_locked(trigger)
            finally:
                self._held = None

    # -- the run -----------------------------------------------------------------------------------

    def _run_locked(self, trigger: str) -> DiscoveryReport:
        t0 = time.monotonic()
        report = DiscoveryReport(run_id=uuid.uuid4())
        try:
            current = self._begin(trigger, report)
            log.info(
                "discovery.started",
                extra={
                    "run_id": str(report.run_id),
                    "trigger": trigger,
                    "full_walk": report.full_walk,
                    "resumed": report.resumed,
                    "since": current.since.isoformat() if current.since else None,
                },
            )
            self._walk(current, report)
            report.watermark = self._end_pass()
        except Exception as exc:
            report.success = False
            report.error = describe_error(exc)
            log.warning(
                "discovery.failed", extra={"run_id": str(report.run_id), "error": report.error}
            )
            report.watermark = self._watermark_or_none()
        report.duration_ms = int((time.monotonic() - t0) * 1000)
        self._finish(report)
        metrics.DISCOVERY_RUNS.labels("succeeded" if report.success else "failed").inc()
        log.info(
            "discovery.finished",
            extra={
                "run_id": str(report.run_id),
                "success": report.success,
                "scanned_users": report.scanned_users,
                "scanned_claims": report.scanned_claims,
                "scanned_requirements": report.scanned_requirements,
                "rows_created": report.created,
                "reclassified": report.reclassified,
                "duration_ms": report.duration_ms,
            },
        )
        return report

    def _begin(self, trigger: str, report: DiscoveryReport) -> _Pass:
        """Record the run, then take up the pass in progress, or begin one."""
        with self.engine.begin() as conn:
            # We hold the lock, so a run still marked running died with its process.
            conn.execute(
                text(
                    "UPDATE discovery_runs SET status = 'failed', finished_at = now(),"
                    " error = 'interrupted: the process running it stopped before it finished'"
                    " WHERE status = 'running'"
                )
            )
            conn.execute(
                text("INSERT INTO discovery_runs (id, trigger) VALUES (:id, :trigger)"),
                {"id": report.run_id, "trigger": trigger},
            )
            conn.execute(_ENSURE_STATE)
            state = conn.execute(_STATE, {"lookback": self.options.lookback_minutes}).one()
        if state.pass_phase is not None:
            current = _Pass(
                state.pass_since,
                state.pass_started_at,
                state.pass_phase,
                state.pass_after_id,
                state.pass_max_seen,
                state.pass_users_max_id,
                resumed=True,
            )
        else:
            users_max_id = self.replica.read(
                "discovery", lambda c: c.execute(_USERS_MAX_ID).scalar()
            )
            with self.engine.begin() as conn:
                self._assert_lock_held(conn)
                started = conn.execute(
                    _BEGIN_PASS,
                    {"since": state.since, "after": FIRST_ID, "users_max_id": users_max_id},
                ).scalar_one()
            current = _Pass(
                state.since, started, "users", FIRST_ID, None, users_max_id, resumed=False
            )
        report.full_walk = current.since is None
        report.resumed = current.resumed
        return current

    def _walk(self, current: _Pass, report: DiscoveryReport) -> None:
        progress = _Progress()
        after = current.after_id
        for phase in current.phases:
            reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="discovery-replica")
            try:
                ahead: Future[_Batch] | None = reader.submit(self._read, phase, current, after)
                while ahead is not None:
                    batch = ahead.result()
                    # The next read goes on while this batch is written.
                    ahead = (
                        reader.submit(self._read, phase, current, batch.last_id)
                        if batch.full
                        else None
                    )
                    if batch.rows:
                        self._write(batch, report)
                    self._log_progress(progress, current, batch, report)
            finally:
                reader.shutdown(wait=True, cancel_futures=True)
            after = FIRST_ID

    def _read(self, phase: str, current: _Pass, after: int) -> _Batch:
        since = current.since
        params: dict[str, Any] = {"after": after, "n": self.options.batch_size}
        if since is not None:
            # MariaDB's DATETIME has no zone: the platform stores UTC.
            params["since"] = since.astimezone(UTC).replace(tzinfo=None) if self._mysql else since
        statement = _SCANS[(phase, since is not None)]
        rows: Sequence[Any] = self.replica.read(
            "discovery", lambda conn: conn.execute(statement, params).all()
        )
        if not rows:
            return _Batch(phase, 0, after, None, {}, full=False)
        user_ids = list(dict.fromkeys(int(r[1]) for r in rows))
        verdicts = classify_in_sql(self.replica, user_ids, details=False, batch_size=len(user_ids))
        return _Batch(
            phase,
            len(rows),
            int(rows[-1][0]),
            max(utc(r[2]) for r in rows),
            verdicts,
            full=len(rows) == self.options.batch_size,
        )

    def _write(self, batch: _Batch, report: DiscoveryReport) -> None:
        """One batch's creations and reclassifications, its figures and the pass's new position,
        in one transaction."""
        with self.engine.begin() as conn:
            self._assert_lock_held(conn)
            ids = list(batch.verdicts)
            existing: dict[int, str | None] = {
                uid: queue_type
                for uid, queue_type in conn.execute(_EXISTING_TYPES, {"ids": pg_int_array(ids)})
            }
            new: list[tuple[int, str]] = []
            moves: dict[str | None, list[Reclassification]] = {}
            for uid, verdict in batch.verdicts.items():
                if verdict.missing:
                    continue  # gone from the replica since the scan: nothing to decide
                to_type = verdict.queue_type and str(verdict.queue_type)
                if uid not in existing:
                    if to_type is not None:
                        new.append((uid, to_type))
                elif existing[uid] != to_type:
                    moves.setdefault(existing[uid], []).append(
                        Reclassification(uid, to_type, verdict.reason)
                    )
            new.sort()
            # A person whose data was erased is not brought back (SPEC 8.3).
            erased = refuse_erased(conn, [uid for uid, _ in new])
            new = [(uid, t) for uid, t in new if uid not in erased]
            created = create_rows(conn, [uid for uid, _ in new], [t for _, t in new])
            moved = sum(
                reclassify(conn, from_type, changes, source="discovery", run_id=report.run_id)
                for from_type, changes in moves.items()
            )
            counts = {
                "users": batch.rows if batch.phase == "users" else 0,
                "claims": batch.rows if batch.phase == "claims" else 0,
                "requirements": batch.rows if batch.phase == "requirements" else 0,
                "created": len(created),
                "reclassified": moved,
            }
            conn.execute(_RUN_FIGURES, {"run_id": report.run_id, **counts})
            conn.execute(
                _ADVANCE,
                {"phase": batch.phase, "after": batch.last_id, "max_seen": batch.max_seen},
            )
        report.scanned_users += counts["users"]
        report.scanned_claims += counts["claims"]
        report.scanned_requirements += counts["requirements"]
        report.created += len(created)
        report.reclassified += moved
        if created:
            metrics.INTAKE_ROWS.labels("discovery", "created").inc(len(created))
        if moved:
            metrics.INTAKE_ROWS.labels("discovery", "reclassified").inc(moved)

    def _log_progress(
        self, progress: _Progress, current: _Pass, batch: _Batch, report: DiscoveryReport
    ) -> None:
        now = time.monotonic()
        if now - progress.logged < self.options.progress_seconds:
            return
        progress.logged = now
        percent = None
        if batch.phase == "users" and current.users_max_id:
            percent = round(min(100.0, 100 * max(batch.last_id, 0) / current.users_max_id), 1)
        log.info(
            "discovery.progress",
            extra={
                "run_id": str(report.run_id),
                "phase": batch.phase,
                "percent_of_users": percent,
                "scanned_users": report.scanned_users,
                "scanned_claims": report.scanned_claims,
                "scanned_requirements": report.scanned_requirements,
                "rows_created": report.created,
                "reclassified": report.reclassified,
                "elapsed_s": round(now - progress.started, 1),
            },
        )

    def _end_pass(self) -> datetime | None:
        with self.engine.begin() as conn:
            self._assert_lock_held(conn)
            watermark: datetime | None = conn.execute(_END_PASS).scalar_one()
        return watermark

    def _watermark_or_none(self) -> datetime | None:
        try:
            with self.engine.connect() as conn:
                found: datetime | None = conn.execute(
                    text("SELECT watermark FROM discovery_state WHERE id = 1")
                ).scalar()
            return found
        except Exception:
            return None

    def _finish(self, report: DiscoveryReport) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE discovery_runs SET status = :status, finished_at = now(),"
                    " duration_ms = :duration_ms, watermark = :watermark, error = :error,"
                    " full_walk = :full_walk, resumed = :resumed"
                    # A run another process already marked interrupted keeps that mark.
                    " WHERE id = :id AND status = 'running'"
                ),
                {
                    "id": report.run_id,
                    "status": "succeeded" if report.success else "failed",
                    "duration_ms": report.duration_ms,
                    "watermark": report.watermark,
                    "error": report.error,
                    "full_walk": report.full_walk,
                    "resumed": report.resumed,
                },
            )

    def _assert_lock_held(self, conn: Connection) -> None:
        if self._held is None:
            raise DiscoveryLockLost("the discovery lock is not held; this run stopped writing")
        self._held.assert_held(conn)
