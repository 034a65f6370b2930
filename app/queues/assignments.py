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

from sqlalchemy import Connection, Engine, Row, TextClause, text

from app import metrics
from app.agents import AgentIdentity
from app.errors import Conflict, InvalidInput, NotFound, ReplicaUnavailable
from app.queues.claims import ClaimSettings
from app.queues.kinds import KINDS, QueueType
from app.queues.ledger import held_by
from app.queues.outcomes import (
    APPLY_OUTCOME_SQL,
    MAX_CALLBACK_AHEAD,
    MAX_SCORE,
    MIN_SCORE,
    RULES,
    Outcome,
    OutcomeRule,
)
from app.queues.transitions import Reclassification, reclassify
from app.replica.classification import Verdict
from app.replica.reader import Contact, Replica

log = logging.getLogger(__name__)

_HEAD = text("SELECT agent_id, user_id, queue_type, queue_entry_id FROM assignments WHERE id = :id")


def _complete_statement(entry_table: str | None) -> TextClause:
    """Ledger row, entry and score row in one statement: the entry and the ledger row are
    already locked (in that order) by the caller, so only the score row is locked here, last."""
    entry = (
        f", e AS (UPDATE {entry_table} SET status = 'completed', updated_at = now()"
        "  WHERE id = :entry_id AND status IN ('assigned', 'pending'))"
        if entry_table
        else ""
    )
    return text(
        "WITH a AS (UPDATE assignments SET status = 'completed', outcome = :outcome,"
        " callback_at = CAST(:callback_at AS timestamptz), notes = :notes,"
        " finished_at = now(), updated_at = now() WHERE id = :id RETURNING *)"
        f"{entry}, s AS ({APPLY_OUTCOME_SQL})"
        " SELECT a.*, s.current_score IS NOT NULL AS scored,"
        " s.current_score AS score_current_score,"
        " s.next_call_after AS score_next_call_after, s.is_active AS score_is_active,"
        " s.current_queue_type AS score_current_queue_type FROM a LEFT JOIN s ON true"
    )


_COMPLETE = {None: _complete_statement(None)} | {
    kind.table: _complete_statement(kind.table) for kind in KINDS.values()
}


@dataclass(slots=True)
class Completed:
    assignment: Row[Any]
    score: dict[str, Any] | None


class AssignmentService:
    def __init__(self, engine: Engine, replica: Replica, settings: ClaimSettings) -> None:
        self.engine = engine
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

    def complete(
        self,
        agent: AgentIdentity,
        assignment_id: uuid.UUID,
        outcome: Outcome,
        callback_at: datetime | None,
        notes: str | None,
    ) -> Completed:
        rule = RULES[outcome]
        if callback_at is not None and not rule.accepts_callback:
            raise InvalidInput(
                f"callback_at is accepted only with might_complete, going_to_complete and"
                f" call_back, not {outcome}",
                ["body", "callback_at"],
            )
        head, verdict = self._reclassification_facts(agent, assignment_id)
        late_deactivation = False
        with self.engine.begin() as conn:
            if callback_at is not None:
                self._check_callback(conn, callback_at)
            row = self._lock(conn, assignment_id, agent.id, head)
            if not row.live:
                if row.status == "completed":
                    raise Conflict("the assignment is already completed")
                # A lapsed lease may still be completed while nobody else has had the user.
                reopenable = row.status in ("active", "expired") and not self._handed_out_since(
                    conn, row
                )
                if not reopenable:
                    if not rule.deactivates:
                        raise Conflict("the assignment is no longer active")
                    # Someone asked never to be called again: that must stick, even after the
                    # lease ran out or a supervisor released the user.
                    self._late_deactivation(conn, row, outcome)
                    late_deactivation = True
            if not late_deactivation:
                completed = self._apply(
                    conn, row, outcome, rule, callback_at, notes, verdict, agent
                )
        if late_deactivation:
            raise Conflict(
                "the assignment is no longer active; the user was still marked not to be called"
            )
        metrics.OUTCOMES.labels(row.queue_type, str(outcome)).inc()
        log.info(
            "assignment.completed",
            extra={"agent_id": agent.id, "user_id": row.user_id, "outcome": str(outcome)},
        )
        return completed

    # -- steps ---------------------------------------------------------------------------------

    def _reclassification_facts(
        self, agent: AgentIdentity, assignment_id: uuid.UUID
    ) -> tuple[Row[Any], Verdict | None]:
        """The assignment's head row, and the replica's verdict read before any lock is taken.
        If the replica is down the outcome still counts; the user is reclassified by the next
        population or claim instead."""
        with self.engine.connect() as conn:
            head = conn.execute(_HEAD, {"id": assignment_id}).one_or_none()
        if head is None or head.agent_id != agent.id:
            raise NotFound("no such assignment for this agent")
        try:
            return head, self.replica.classify([head.user_id])[head.user_id]
        except ReplicaUnavailable:
            log.warning("assignment.reclassify_skipped", extra={"user_id": head.user_id})
            return head, None

    @staticmethod
    def _check_callback(conn: Connection, callback_at: datetime) -> None:
        ok = conn.execute(
            text("SELECT :cb > now() AND :cb <= now() + make_interval(days => :d)"),
            {"cb": callback_at, "d": MAX_CALLBACK_AHEAD.days},
        ).scalar()
        if not ok:
            raise InvalidInput(
                "callback_at must be in the future and at most"
                f" {MAX_CALLBACK_AHEAD.days} days ahead",
                ["body", "callback_at"],
            )

    @staticmethod
    def _table(row: Any) -> str:
        return KINDS[QueueType(row.queue_type)].table

    def _lock(
        self,
        conn: Connection,
        assignment_id: uuid.UUID,
        agent_id: int | None,
        head: Row[Any] | None = None,
    ) -> Row[Any]:
        """Lock the entry, then the ledger row; NotFound for someone else's assignment.

        ``head`` (agent, queue, entry) may come from an earlier read: those columns never change
        once the assignment exists.
        """
        if head is None:
            head = conn.execute(_HEAD, {"id": assignment_id}).one_or_none()
        if head is None or (agent_id is not None and head.agent_id != agent_id):
            raise NotFound("no such assignment for this agent")
        if head.queue_entry_id is not None:
            conn.execute(
                text(f"SELECT 1 FROM {self._table(head)} WHERE id = :id FOR UPDATE"),
                {"id": head.queue_entry_id},
            )
        return conn.execute(
            text(
                "SELECT *, status = 'active' AND lease_expires_at > now() AS live"
                " FROM assignments WHERE id = :id FOR UPDATE"
            ),
            {"id": assignment_id},
        ).one()

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

    def _apply(
        self,
        conn: Connection,
        row: Row[Any],
        outcome: Outcome,
        rule: OutcomeRule,
        callback_at: datetime | None,
        notes: str | None,
        verdict: Verdict | None,
        agent: AgentIdentity,
    ) -> Completed:
        result = conn.execute(
            _COMPLETE[self._table(row) if row.queue_entry_id is not None else None],
            {
                "id": row.id,
                "entry_id": row.queue_entry_id,
                "notes": notes,
                "user_id": row.user_id,
                "outcome": str(outcome),
                "successful": rule.successful,
                "change": rule.score_change,
                "min_score": MIN_SCORE,
                "max_score": MAX_SCORE,
                "callback_at": callback_at,
                "delay_seconds": int(rule.delay.total_seconds()) if rule.delay else None,
                "deactivates": rule.deactivates,
            },
        ).one()
        assignment = result
        score_row = (
            {
                "current_score": result.score_current_score,
                "next_call_after": result.score_next_call_after,
                "is_active": result.score_is_active,
                "current_queue_type": result.score_current_queue_type,
            }
            if result.scored
            else None
        )
        if score_row is None:
            return Completed(assignment, None)
        score = score_row
        new_type = verdict.queue_type and str(verdict.queue_type) if verdict else None
        if verdict is not None and new_type != score["current_queue_type"]:
            reclassify(
                conn,
                score["current_queue_type"],
                [Reclassification(row.user_id, new_type, verdict.reason)],
                source="outcome",
                agent_id=agent.id,
            )
            score["current_queue_type"] = new_type
        return Completed(assignment, score)
