"""What an agent does with an assignment: look at it, extend, release, complete (SPEC 3.3, 3.4).

Every action locks in the service-wide order, entry then ledger row then score row, so actions,
claims, sweeps and refreshes never deadlock one another. Only the holder may act; another agent's
assignment is reported as not found, so ids cannot be probed.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, text

from app import metrics
from app.agents import AGENT_COLUMNS, BY_TOKEN, AgentIdentity, hash_token, identity
from app.errors import Conflict, InvalidInput, NotFound, ReplicaUnavailable, Unauthorized
from app.queues.claims import ClaimSettings
from app.queues.kinds import KINDS, QueueType
from app.queues.ledger import held_by
from app.queues.outcomes import (
    APPLY_OUTCOME_SQL,
    MAX_CALLBACK_AHEAD,
    MAX_SCORE,
    MIN_SCORE,
    OUTCOME_RETURNING,
    RULES,
    Outcome,
    OutcomeRule,
)
from app.queues.transitions import Reclassification, reclassify
from app.queues.views import ASSIGNMENT_COLUMNS
from app.replica.classification import Verdict
from app.replica.reader import Contact, Replica
from app.statements import Statement

log = logging.getLogger(__name__)

_HEAD = text("SELECT agent_id, user_id, queue_type, queue_entry_id FROM assignments WHERE id = :id")


def _complete_statement(
    entry_table: str | None, *, live_only: bool, lock_entry: bool = False
) -> Statement:
    """Ledger row, entry and score row in one statement, locked in the service-wide order
    (entry, ledger row, score row).

    ``live_only``: complete only a live assignment (active, lease running), else change nothing
    and return no row, so the common case needs no separate read of the ledger row.
    ``lock_entry``: lock the entry in this statement, so it can run on its own (autocommit): the
    materialised CTE ``lk`` is read by an InitPlan of the ledger UPDATE's condition, which runs
    before the UPDATE locks the ledger row. Otherwise the caller has locked the entry.
    """
    live = " AND status = 'active' AND lease_expires_at > now()" if live_only else ""
    lock = ""
    if lock_entry and entry_table:
        lock = (
            f"lk AS MATERIALIZED (SELECT id FROM {entry_table} WHERE id = :entry_id FOR UPDATE), "
        )
        live += " AND (SELECT count(*) FROM lk) >= 0"
    entry = (
        f", e AS (UPDATE {entry_table} SET status = 'completed', updated_at = now()"
        "  WHERE id = :entry_id AND status IN ('assigned', 'pending') AND EXISTS (SELECT 1 FROM a))"
        if entry_table
        else ""
    )
    return Statement(
        f"WITH {lock}a AS (UPDATE assignments SET status = 'completed', outcome = :outcome,"
        " callback_at = CAST(:callback_at AS timestamptz), notes = :notes,"
        f" finished_at = now(), updated_at = now() WHERE id = :id{live}"
        f" RETURNING {ASSIGNMENT_COLUMNS})"
        f"{entry}, s AS ({APPLY_OUTCOME_SQL} AND EXISTS (SELECT 1 FROM a) {OUTCOME_RETURNING})"
        " SELECT a.*, s.current_score IS NOT NULL AS scored,"
        " s.current_score AS score_current_score,"
        " s.next_call_after AS score_next_call_after, s.is_active AS score_is_active,"
        " s.current_queue_type AS score_current_queue_type FROM a LEFT JOIN s ON true"
    )


_TABLES = (None, *(kind.table for kind in KINDS.values()))
_COMPLETE = {
    (table, live_only): _complete_statement(table, live_only=live_only)
    for table in _TABLES
    for live_only in (True, False)
}
# The common case in one autocommit statement: a live assignment, no reclassification.
_COMPLETE_ALONE = {
    table: _complete_statement(table, live_only=True, lock_entry=True) for table in _TABLES
}

_LOCK_ENTRY = {
    kind.table: text(f"SELECT 1 FROM {kind.table} WHERE id = :id FOR UPDATE")
    for kind in KINDS.values()
}
_LOCK_LEDGER = text(
    "SELECT *, status = 'active' AND lease_expires_at > now() AS live"
    " FROM assignments WHERE id = :id FOR UPDATE"
)

# One round trip opens a completion: who is asking (by token, or by id for in-process callers),
# the assignment's unchanging head (holder, user, queue, entry), the user's queue type now (to
# know whether the outcome comes with a reclassification), and whether callback_at is within
# bounds by the database's clock.
_OPEN = """
SELECT {agent_columns}, h.agent_id AS holder_id, h.user_id, h.queue_type, h.queue_entry_id,
       s.user_id IS NOT NULL AS scored, s.current_queue_type AS score_queue_type,
       CAST(:callback_at AS timestamptz) > now()
         AND CAST(:callback_at AS timestamptz) <= now() + make_interval(days => :max_days)
         AS callback_ok
  FROM agents ag
  LEFT JOIN assignments h ON h.id = :assignment_id
  LEFT JOIN user_call_scores s ON s.user_id = h.user_id
 WHERE {where}
"""
_OPEN_BY_TOKEN = Statement(_OPEN.format(agent_columns=AGENT_COLUMNS, where=BY_TOKEN))
_OPEN_BY_ID = Statement(_OPEN.format(agent_columns=AGENT_COLUMNS, where="ag.id = :agent_id"))


@dataclass(slots=True)
class Completed:
    assignment: Any  # a row with ASSIGNMENT_COLUMNS
    score: dict[str, Any] | None


class AssignmentService:
    def __init__(self, engine: Engine, replica: Replica, settings: ClaimSettings) -> None:
        self.engine = engine
        # The same pool, each statement its own transaction: completions open with a read and
        # usually end with one statement, so BEGIN and COMMIT would be two more round trips.
        self.autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.replica = replica
        self.settings = settings

    # -- reading -------------------------------------------------------------------------------

    def current(self, agent: AgentIdentity) -> tuple[Row[Any], Contact | None] | None:
        with self.engine.connect() as conn:
            row = held_by(conn, agent.id)
        if row is None:
            return None
        return row, self.replica.fetch_contacts(row.user_id)

    # -- acting --------------------------------------------------------------------------------

    def extend(
        self, agent: AgentIdentity, assignment_id: uuid.UUID
    ) -> tuple[Row[Any], Contact | None]:
        with self.engine.begin() as conn:
            row = self._lock(conn, assignment_id, agent.id)
            self._require_live(row)
            row = conn.execute(
                text(
                    "UPDATE assignments SET lease_expires_at = now() + make_interval(secs => :s),"
                    " updated_at = now() WHERE id = :id RETURNING *"
                ),
                {"s": self.settings.lease_seconds, "id": assignment_id},
            ).one()
        # The extension is committed; a replica blip must not make the agent think it failed.
        try:
            contact = self.replica.fetch_contacts(row.user_id)
        except ReplicaUnavailable:
            contact = None
        return row, contact

    def release(
        self,
        agent: AgentIdentity,
        assignment_id: uuid.UUID,
        *,
        requeue: bool,
        reason: str | None,
        forced: bool = False,
    ) -> Row[Any]:
        """Give the user back: re-queued (``pending``, same position) or skipped with a cooldown.

        ``forced`` is a supervisor's release of anyone's assignment; it always re-queues.
        """
        requeue = requeue or forced
        with self.engine.begin() as conn:
            row = self._lock(conn, assignment_id, None if forced else agent.id)
            self._require_live(row)
            if forced:
                reason = f"forced by supervisor {agent.name}" + (f": {reason}" if reason else "")
            row = conn.execute(
                text(
                    "UPDATE assignments SET status = 'released', release_reason = :r,"
                    " finished_at = now(), updated_at = now() WHERE id = :id RETURNING *"
                ),
                {"r": reason, "id": assignment_id},
            ).one()
            if row.queue_entry_id is not None:
                conn.execute(
                    text(
                        f"UPDATE {self._table(row)} SET status = :status,"
                        " assigned_to_agent = NULL, assigned_at = NULL, updated_at = now()"
                        " WHERE id = :id AND status = 'assigned'"
                    ),
                    {"status": "pending" if requeue else "skipped", "id": row.queue_entry_id},
                )
            if not requeue and self.settings.skip_cooldown_minutes > 0:
                conn.execute(
                    text(
                        "UPDATE user_call_scores SET next_call_after ="
                        " GREATEST(coalesce(next_call_after, now()),"
                        " now() + make_interval(mins => :m)), updated_at = now()"
                        " WHERE user_id = :u"
                    ),
                    {"m": self.settings.skip_cooldown_minutes, "u": row.user_id},
                )
        log.info(
            "assignment.released",
            extra={
                "agent_id": agent.id,
                "user_id": row.user_id,
                "requeue": requeue,
                "forced": forced,
            },
        )
        return row

    def complete_for_token(
        self,
        token: str,
        assignment_id: uuid.UUID,
        outcome: Outcome,
        callback_at: datetime | None,
        notes: str | None,
    ) -> Completed:
        """The route's entry point: authentication and completion on one connection."""
        with self.autocommit.connect() as conn:
            opened = self._open(conn, {"token_hash": hash_token(token)}, assignment_id, callback_at)
            if opened is None:
                raise Unauthorized("a valid agent bearer token is required")
            return self._complete(
                conn, identity(opened), opened, assignment_id, outcome, callback_at, notes
            )

    def complete(
        self,
        agent: AgentIdentity,
        assignment_id: uuid.UUID,
        outcome: Outcome,
        callback_at: datetime | None,
        notes: str | None,
    ) -> Completed:
        with self.autocommit.connect() as conn:
            opened = self._open(conn, {"agent_id": agent.id}, assignment_id, callback_at)
            if opened is None:
                raise Unauthorized("no such agent")
            return self._complete(conn, agent, opened, assignment_id, outcome, callback_at, notes)

    @staticmethod
    def _open(
        conn: Connection,
        who: dict[str, Any],
        assignment_id: uuid.UUID,
        callback_at: datetime | None,
    ) -> Any:
        statement = _OPEN_BY_TOKEN if "token_hash" in who else _OPEN_BY_ID
        params = {
            **who,
            "assignment_id": assignment_id,
            "callback_at": callback_at,
            "max_days": MAX_CALLBACK_AHEAD.days,
        }
        return statement.one_or_none(conn, params)

    def _complete(
        self,
        conn: Connection,
        agent: AgentIdentity,
        head: Any,
        assignment_id: uuid.UUID,
        outcome: Outcome,
        callback_at: datetime | None,
        notes: str | None,
    ) -> Completed:
        """``conn`` is in autocommit mode: the common case (a live assignment, no
        reclassification) is one statement; anything else is a transaction of its own."""
        rule = RULES[outcome]
        if callback_at is not None and not rule.accepts_callback:
            raise InvalidInput(
                f"callback_at is accepted only with might_complete, going_to_complete and"
                f" call_back, not {outcome}",
                ["body", "callback_at"],
            )
        if head.holder_id != agent.id:
            raise NotFound("no such assignment for this agent")
        if callback_at is not None and not head.callback_ok:
            raise InvalidInput(
                "callback_at must be in the future and at most"
                f" {MAX_CALLBACK_AHEAD.days} days ahead",
                ["body", "callback_at"],
            )
        # Read before any lock is taken.
        verdict = self._verdict(head.user_id)
        apply = _Apply(assignment_id, head, outcome, rule, callback_at, notes, verdict, agent)
        completed = None
        if not head.scored or verdict is None or _type_of(verdict) == head.score_queue_type:
            completed = self._apply(conn, apply, _COMPLETE_ALONE[self._entry_table(head)])
        if completed is None:
            # The same connection, now transactional (a second checkout per request could
            # exhaust the pool under load).
            conn.commit()
            conn.execution_options(isolation_level=conn.default_isolation_level)
            with conn.begin():
                completed = self._complete_in_transaction(conn, apply)
            if completed is None:
                raise Conflict(
                    "the assignment is no longer active; the user was still marked not to be called"
                )
        metrics.OUTCOMES.labels(head.queue_type, str(outcome)).inc()
        log.info(
            "assignment.completed",
            extra={"agent_id": agent.id, "user_id": head.user_id, "outcome": str(outcome)},
        )
        return completed

    def _complete_in_transaction(self, conn: Connection, a: _Apply) -> Completed | None:
        """Everything but the common case: a reclassification to apply with the outcome, or an
        assignment that is no longer live (already completed, lapsed, released). None when
        only a late deactivation was recorded."""
        head, table = a.head, self._entry_table(a.head)
        self._lock_entry(conn, head)
        completed = self._apply(conn, a, _COMPLETE[table, True])
        if completed is not None:
            return completed
        row = self._lock_ledger(conn, a.assignment_id)
        if not row.live:
            if row.status == "completed":
                raise Conflict("the assignment is already completed")
            # A lapsed lease may still be completed while nobody else has had the user.
            reopenable = row.status in ("active", "expired") and not self._handed_out_since(
                conn, row
            )
            if not reopenable:
                if not a.rule.deactivates:
                    raise Conflict("the assignment is no longer active")
                # Someone asked never to be called again: that must stick, even after the
                # lease ran out or a supervisor released the user.
                self._late_deactivation(conn, row, a.outcome)
                conn.commit()
                raise Conflict(
                    "the assignment is no longer active; the user was still marked not to be called"
                )
        completed = self._apply(conn, a, _COMPLETE[table, False])
        assert completed is not None
        return completed

    # -- steps ---------------------------------------------------------------------------------

    def _verdict(self, user_id: int) -> Verdict | None:
        """The replica's verdict on the user, read before any lock is taken. If the replica is
        down the outcome still counts; the user is reclassified by the next population or claim
        instead."""
        try:
            return self.replica.classify([user_id])[user_id]
        except ReplicaUnavailable:
            log.warning("assignment.reclassify_skipped", extra={"user_id": user_id})
            return None

    @staticmethod
    def _table(row: Any) -> str:
        return KINDS[QueueType(row.queue_type)].table

    def _lock(
        self,
        conn: Connection,
        assignment_id: uuid.UUID,
        agent_id: int | None,
        head: Any = None,
    ) -> Row[Any]:
        """Lock the entry, then the ledger row; NotFound for someone else's assignment.

        ``head`` (agent, queue, entry) may come from an earlier read: those columns never change
        once the assignment exists.
        """
        if head is None:
            head = conn.execute(_HEAD, {"id": assignment_id}).one_or_none()
        if head is None or (agent_id is not None and head.agent_id != agent_id):
            raise NotFound("no such assignment for this agent")
        self._lock_entry(conn, head)
        return self._lock_ledger(conn, assignment_id)

    def _lock_entry(self, conn: Connection, head: Any) -> None:
        if head.queue_entry_id is not None:
            conn.execute(_LOCK_ENTRY[self._table(head)], {"id": head.queue_entry_id})

    @staticmethod
    def _lock_ledger(conn: Connection, assignment_id: uuid.UUID) -> Row[Any]:
        return conn.execute(_LOCK_LEDGER, {"id": assignment_id}).one()

    @staticmethod
    def _require_live(row: Row[Any]) -> None:
        if not row.live:
            raise Conflict("the assignment is no longer active")

    @staticmethod
    def _handed_out_since(conn: Connection, row: Row[Any]) -> bool:
        return bool(
            conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM assignments WHERE user_id = :u AND id <> :id"
                    " AND assigned_at >= :at)"
                ),
                {"u": row.user_id, "id": row.id, "at": row.assigned_at},
            ).scalar()
        )

    def _late_deactivation(self, conn: Connection, row: Row[Any], outcome: Outcome) -> None:
        conn.execute(
            text(
                "UPDATE assignments SET outcome = :o, updated_at = now(),"
                " status = CASE WHEN status = 'active' THEN 'expired' ELSE status END,"
                " finished_at = coalesce(finished_at, now()) WHERE id = :id"
            ),
            {"o": str(outcome), "id": row.id},
        )
        conn.execute(
            text(
                "UPDATE user_call_scores SET is_active = false, last_outcome = :o,"
                " updated_at = now() WHERE user_id = :u"
            ),
            {"o": str(outcome), "u": row.user_id},
        )

    def _entry_table(self, head: Any) -> str | None:
        return self._table(head) if head.queue_entry_id is not None else None

    def _apply(self, conn: Connection, a: _Apply, statement: Statement) -> Completed | None:
        """A completion statement, then the reclassification the replica asked for. None when
        the statement completes only a live assignment and this one is not (nothing written)."""
        head = a.head
        result = statement.one_or_none(
            conn,
            {
                "id": a.assignment_id,
                "entry_id": head.queue_entry_id,
                "notes": a.notes,
                "user_id": head.user_id,
                "outcome": str(a.outcome),
                "successful": a.rule.successful,
                "change": a.rule.score_change,
                "min_score": MIN_SCORE,
                "max_score": MAX_SCORE,
                "callback_at": a.callback_at,
                "delay_seconds": int(a.rule.delay.total_seconds()) if a.rule.delay else None,
                "deactivates": a.rule.deactivates,
            },
        )
        if result is None:
            return None
        if not result.scored:
            return Completed(result, None)
        score = {
            "current_score": result.score_current_score,
            "next_call_after": result.score_next_call_after,
            "is_active": result.score_is_active,
            "current_queue_type": result.score_current_queue_type,
        }
        verdict = a.verdict
        new_type = _type_of(verdict) if verdict else None
        if verdict is not None and new_type != score["current_queue_type"]:
            # In the one-statement path this happens only if the type changed between the
            # opening read and the completion; reclassify() is one statement either way.
            reclassify(
                conn,
                score["current_queue_type"],
                [Reclassification(head.user_id, new_type, verdict.reason)],
                source="outcome",
                agent_id=a.agent.id,
            )
            score["current_queue_type"] = new_type
        return Completed(result, score)


def _type_of(verdict: Verdict) -> str | None:
    return verdict.queue_type and str(verdict.queue_type)


@dataclass(frozen=True, slots=True)
class _Apply:
    """One completion, as both of its statements' variants see it."""

    assignment_id: uuid.UUID
    head: Any
    outcome: Outcome
    rule: OutcomeRule
    callback_at: datetime | None
    notes: str | None
    verdict: Verdict | None
    agent: AgentIdentity
