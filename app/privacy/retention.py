"""Retention (SPEC 8.3): notes, release reasons and details cleared RETENTION_NOTES_DAYS after an
assignment finished; finished assignments, and the callbacks, transitions and refusals of the
same age, deleted after RETENTION_LEDGER_DAYS (0: kept forever), once their days' compliance
figures are kept (``app.rules.compliance.keep_days``), so the report answers the same for
those days. Each run first keeps the figures of every final day since the last run (the report
then reads them instead of the ledger's rows).

Every batch is one statement in a transaction of its own that locks what it changes with
``SKIP LOCKED``: it never waits for a claim, and a claim waits at most for that one statement
(none touches rows this old in practice). The notes pass goes on from where it stopped
(``retention_state``), so a daily run reads only what finished since the last one, and leaves
alone rows the ledger pass deletes (older than RETENTION_LEDGER_DAYS: a first run over years of
history would otherwise rewrite every row it then deletes); the deletes take the oldest rows
first, which are gone afterwards.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, text

from app.config import Settings
from app.rules.calling import load_calling_rules
from app.rules.compliance import keep_days

log = logging.getLogger(__name__)

BATCH = 5_000
# Days' figures kept per transaction: a week of a busy centre's hand-outs is seconds of work.
KEEP_DAYS = 7
# The caps look back 7 days: a day's figures need the week before it, so the days kept reach a
# week past the oldest rows deleted.
CAPS_LOOKBACK_DAYS = 8

_CLEAR_NOTES = text(
    """
    WITH batch AS (
        SELECT id, finished_at FROM assignments
         WHERE finished_at < now() - make_interval(days => :days)
           AND (finished_at, id) > (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))
           AND (notes IS NOT NULL OR release_reason IS NOT NULL OR details <> '{}')
         ORDER BY finished_at, id
         LIMIT :n
           FOR UPDATE SKIP LOCKED
    ), cleared AS (
        UPDATE assignments a
           SET notes = NULL, release_reason = NULL, details = '{}'
          FROM batch
         WHERE a.id = batch.id
        RETURNING a.id
    )
    SELECT (SELECT count(*) FROM batch) AS read, (SELECT count(*) FROM cleared) AS cleared,
           (SELECT finished_at FROM batch ORDER BY finished_at DESC, id DESC LIMIT 1) AS last_at,
           (SELECT id FROM batch ORDER BY finished_at DESC, id DESC LIMIT 1) AS last_id
    """
)
_COUNT_NOTES = text(
    "SELECT count(*) FROM assignments"
    " WHERE finished_at < now() - make_interval(days => :days)"
    " AND (finished_at, id) > (CAST(:after_at AS timestamptz), CAST(:after_id AS uuid))"
    " AND (notes IS NOT NULL OR release_reason IS NOT NULL OR details <> '{}')"
)
_STATE = text("SELECT through_at, through_id FROM retention_state WHERE name = 'notes'")
_SAVE_STATE = text(
    "INSERT INTO retention_state (name, through_at, through_id) VALUES ('notes', :at, :id)"
    " ON CONFLICT (name) DO UPDATE SET through_at = EXCLUDED.through_at,"
    " through_id = EXCLUDED.through_id"
)
_START = ("-infinity", "00000000-0000-0000-0000-000000000000")
_NOTES_START = text(
    "SELECT * FROM (VALUES (CAST(:at AS timestamptz), CAST(:id AS uuid)),"
    " (now() - make_interval(days => :d), CAST('00000000-0000-0000-0000-000000000000' AS uuid)))"
    " AS s(at, id) ORDER BY at DESC, id DESC LIMIT 1"
)


@dataclass(frozen=True, slots=True)
class Old:
    """The rows of a table retention deletes: older than the cutoff, oldest first."""

    table: str
    where: str
    order: str

    def count(self) -> Any:
        return text(f"SELECT count(*) FROM {self.table} WHERE {self.where}")

    def delete(self) -> Any:
        return text(
            f"WITH old AS (SELECT id FROM {self.table} WHERE {self.where} ORDER BY {self.order}"
            f" LIMIT :n FOR UPDATE SKIP LOCKED)"
            f" DELETE FROM {self.table} t USING old WHERE t.id = old.id"
        )


OLD: tuple[Old, ...] = (
    Old("assignments", "status <> 'active' AND finished_at < :cutoff", "finished_at"),
    Old(
        "callbacks",
        "status IN ('completed', 'cancelled') AND finished_at < :cutoff",
        "finished_at",
    ),
    Old("erased_callbacks", "coalesce(finished_at, due_at) < :cutoff", "due_at"),
    Old("queue_transitions", "created_at < :cutoff", "created_at"),
    Old("entry_invalidations", "created_at < :cutoff", "created_at"),
)

# Webhook events (SPEC 8.4) go WEBHOOK_RETENTION_DAYS after they happened, with their deliveries
# and attempts, once no endpoint still waits for them.
OLD_EVENTS = Old(
    "webhook_events",
    "occurred_at < :cutoff AND dispatched AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d"
    " WHERE d.event_id = webhook_events.id AND d.status = 'pending')",
    "occurred_at",
)


@dataclass(slots=True)
class RetentionReport:
    dry_run: bool
    notes_cleared: int = 0
    days_kept: int = 0
    deleted: dict[str, int] = field(default_factory=dict)
    # Stopped at its time budget (the scheduler's run): the next run goes on.
    stopped_early: bool = False
    duration_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# progress(stage, done, total): total is an estimate, None when not known.
Progress = Callable[[str, int, int | None], None]


class Retention:
    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        batch: int = BATCH,
        budget_seconds: float | None = None,
        on_progress: Progress | None = None,
    ) -> None:
        self.engine = engine
        self.settings = settings
        self.batch = batch
        self.budget_seconds = budget_seconds
        self.on_progress = on_progress
        self._deadline = 0.0

    def run(self, *, dry_run: bool = False) -> RetentionReport:
        started = time.monotonic()
        self._deadline = started + (self.budget_seconds or float("inf"))
        report = RetentionReport(dry_run)
        if dry_run:
            self._count(report)
        else:
            self._keep_days(report)
            self._clear_notes(report)
            if self.settings.retention_ledger_days > 0 and not report.stopped_early:
                self._delete_ledger(report)
            self._delete(report, OLD_EVENTS, self._cutoff(self.settings.webhook_retention_days))
        report.duration_ms = int((time.monotonic() - started) * 1000)
        log.info("retention.finished", extra=report.as_dict())
        return report

    def _out_of_time(self, report: RetentionReport) -> bool:
        if time.monotonic() >= self._deadline:
            report.stopped_early = True
        return report.stopped_early

    def _progress(self, stage: str, done: int, total: int | None) -> None:
        if self.on_progress is not None:
            self.on_progress(stage, done, total)

    # -- what a run would do ---------------------------------------------------------------

    def _notes_start(self, conn: Connection) -> tuple[Any, Any]:
        """Where the notes pass starts: where the last one stopped, or the ledger's cutoff when
        that is later (what is older is deleted, notes and all, by the ledger pass)."""
        after = tuple(conn.execute(_STATE).one_or_none() or _START)
        if self.settings.retention_ledger_days > 0:
            return tuple(
                conn.execute(
                    _NOTES_START,
                    {"at": after[0], "id": after[1], "d": self.settings.retention_ledger_days},
                ).one()
            )
        return after

    def _count(self, report: RetentionReport) -> None:
        s = self.settings
        with self.engine.connect() as conn:
            after = self._notes_start(conn)
            report.notes_cleared = conn.execute(
                _COUNT_NOTES,
                {"days": s.retention_notes_days, "after_at": after[0], "after_id": after[1]},
            ).scalar_one()
            if s.retention_ledger_days > 0:
                cutoff = conn.execute(
                    text("SELECT now() - make_interval(days => :d)"),
                    {"d": s.retention_ledger_days},
                ).scalar_one()
                for old in OLD:
                    report.deleted[old.table] = conn.execute(
                        old.count(), {"cutoff": cutoff}
                    ).scalar_one()
            report.deleted[OLD_EVENTS.table] = conn.execute(
                OLD_EVENTS.count(), {"cutoff": self._cutoff(s.webhook_retention_days)}
            ).scalar_one()
            conn.rollback()

    def _cutoff(self, days: int) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(
                text("SELECT now() - make_interval(days => :d)"), {"d": days}
            ).scalar_one()

    # -- notes -----------------------------------------------------------------------------

    def _clear_notes(self, report: RetentionReport) -> None:
        days = self.settings.retention_notes_days
        with self.engine.connect() as conn:
            after = self._notes_start(conn)
            total = conn.execute(
                _COUNT_NOTES, {"days": days, "after_at": after[0], "after_id": after[1]}
            ).scalar_one()
            conn.rollback()
        done = 0
        while not self._out_of_time(report):
            with self.engine.begin() as conn:
                step = conn.execute(
                    _CLEAR_NOTES,
                    {"days": days, "after_at": after[0], "after_id": after[1], "n": self.batch},
                ).one()
                if step.read == 0:
                    break
                after = (step.last_at, step.last_id)
                conn.execute(_SAVE_STATE, {"at": step.last_at, "id": step.last_id})
            report.notes_cleared += step.cleared
            done += step.cleared
            self._progress("notes", done, total)

    # -- the days' figures -----------------------------------------------------------------

    def _keep_days(self, report: RetentionReport, forced_through: date | None = None) -> None:
        """Every final day up to yesterday (and through ``forced_through`` whatever), a week
        per transaction."""
        while not self._out_of_time(report):
            with self.engine.begin() as conn:
                zone = load_calling_rules(conn, self.settings).zone
                today = conn.execute(text("SELECT now()")).scalar_one().astimezone(zone).date()
                through = max(today - timedelta(days=1), forced_through or date.min)
                kept = keep_days(
                    conn, self.settings, through, forced_through=forced_through, most=KEEP_DAYS
                )
            if kept == 0:
                break
            report.days_kept += kept
            self._progress("days", report.days_kept, None)

    # -- the ledger ------------------------------------------------------------------------

    def _delete_ledger(self, report: RetentionReport) -> None:
        s = self.settings
        with self.engine.begin() as conn:
            cutoff = conn.execute(
                text("SELECT now() - make_interval(days => :d)"), {"d": s.retention_ledger_days}
            ).scalar_one()
            zone = load_calling_rules(conn, s).zone
        # The days whose rows go, and the week after (its caps look back at them), kept first.
        forced: date = cutoff.astimezone(zone).date() + timedelta(days=CAPS_LOOKBACK_DAYS)
        self._keep_days(report, forced)
        if report.stopped_early:
            return
        for old in OLD:
            self._delete(report, old, cutoff)

    def _delete(self, report: RetentionReport, old: Old, cutoff: Any) -> None:
        """The table's rows older than ``cutoff``, in SKIP LOCKED batches, one statement each."""
        statement = old.delete()
        deleted = 0
        while not self._out_of_time(report):
            with self.engine.begin() as conn:
                n = conn.execute(statement, {"cutoff": cutoff, "n": self.batch}).rowcount
            if n == 0:
                break
            deleted += n
            self._progress(old.table, deleted, None)
        report.deleted[old.table] = deleted
