"""What an agent does with an assignment: look at it, extend, release, complete (SPEC 3.3, 3.4).

Every action is one database function (``cq_extend``, ``cq_release``, ``cq_complete``, in
migrations/sql/) that takes its locks in the service-wide order (the source row: entry or
callback, then the ledger row, then the score row, last the number), the order claims and sweeps
take them too, so no two of them deadlock. Only the holder may act; another agent's assignment is
reported as not found, so ids cannot be probed.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, Row, text

from app import metrics
from app.auth.identity import AgentIdentity, Holding
from app.errors import Conflict, InvalidInput, NotFound, ReplicaUnavailable
from app.queues.claims import ClaimSettings
from app.queues.ledger import held_by
from app.replica.classification import Verdict
from app.replica.reader import Contact, Replica
from app.rules.calling import CallingWindow, require_callback_inside
from app.rules.outcomes import MAX_CALLBACK_AHEAD, MAX_SCORE, MIN_SCORE, RULES, Outcome
from app.statements import Statement

log = logging.getLogger(__name__)

# The assignment's unchanging head (holder, user, queue, entry, when handed out): what a
# completion needs before it reads the replica, when the authentication did not bring it
# (``Holding``: the agent's active assignment).
_HEAD = Statement(
    "SELECT agent_id, user_id, queue_type, queue_entry_id, assigned_at"
    " FROM assignments WHERE id = :id"
)
_COMPLETE = Statement(
    "SELECT * FROM cq_complete(:agent_id, :id, :queue_type, :entry_id, :user_id, :assigned_at,"
    " :outcome,"
    " CAST(:callback_at AS timestamptz), :notes, :change, :delay_seconds, :successful,"
    " :deactivates, :min_score, :max_score, :verdict_known, :verdict_type, :verdict_reason,"
    " :suppresses)"
)
_EXTEND = text("SELECT cq_extend(:id, :agent_id, :lease_seconds)")
_RELEASE = text("SELECT cq_release(:id, :agent_id, :requeue, :reason, :skip_minutes)")
_ROW = text("SELECT * FROM assignments WHERE id = :id")

_CONFLICTS = {
    "already_completed": "the assignment is already completed",
    "not_active": "the assignment is no longer active",
    "late_deactivation": (
        "the assignment is no longer active; the user was still marked not to be called"
    ),
}


@dataclass(slots=True)
class Completed:
    assignment: Any  # a row with the columns assignment_view reads
    score: dict[str, Any] | None


class AssignmentService:
    def __init__(
        self,
        engine: Engine,
        autocommit: Engine,
        replica: Replica,
        settings: ClaimSettings,
        window_of: Callable[[Connection], CallingWindow],
    ) -> None:
        self.engine = engine
        # A completion is a read and one function call: each its own transaction.
        self.autocommit = autocommit
        self.replica = replica
        self.settings = settings
        # The calling rules and the clock, for callers that did not read them with the agent.
        self.window_of = window_of

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
        """A new lease of LEASE_SECONDS from now (``cq_extend``)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                _EXTEND,
                {
                    "id": assignment_id,
                    "agent_id": agent.id,
                    "lease_seconds": self.settings.lease_seconds,
                },
            ).scalar_one()
            _raise_for(result)
            row = conn.execute(_ROW, {"id": assignment_id}).one()
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
        """Give the user back (``cq_release``): re-queued (``pending``, same position) or
        skipped with a cooldown. A callback being served goes back to ``scheduled``: still due
        when re-queued, due again after the skip cooldown when skipped (SPEC 7.2).

        ``forced`` is a supervisor's release of anyone's assignment; it always re-queues.
        """
        requeue = requeue or forced
        if forced:
            reason = f"forced by supervisor {agent.name}" + (f": {reason}" if reason else "")
        with self.engine.begin() as conn:
            result = conn.execute(
                _RELEASE,
                {
                    "id": assignment_id,
                    "agent_id": None if forced else agent.id,
                    "requeue": requeue,
                    "reason": reason,
                    "skip_minutes": self.settings.skip_cooldown_minutes,
                },
            ).scalar_one()
            _raise_for(result)
            row = conn.execute(_ROW, {"id": assignment_id}).one()
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
        conn: Connection | None = None,
        window: CallingWindow | None = None,
        holding: Holding | None = None,
    ) -> Completed:
        """The outcome, the score row and the reclassification the replica asks for, in one
        transaction (``cq_complete``); the replica is read first, with no lock held. A
        ``callback_at`` must be in the calling window; a do_not_contact puts the number that was
        handed out on the do-not-call list in the same transaction.

        ``conn``: the request's connection (in autocommit), instead of a checkout of its own.
        ``window``: the calling rules and the database's clock as read with the agent (read here
        when not given). ``holding``: the head of the agent's active assignment as read with the
        agent; when it is the one named, the head is not read again."""
        rule = RULES[outcome]
        if callback_at is not None and not rule.accepts_callback:
            raise InvalidInput(
                f"callback_at is accepted only with might_complete, going_to_complete and"
                f" call_back, not {outcome}",
                ["body", "callback_at"],
            )
        with (
            contextlib.nullcontext(conn) if conn is not None else self.autocommit.connect() as conn
        ):
            # The head's columns never change after the hand-out, so the one read with the agent
            # is as good as a read now. Any other assignment (one that lapsed and was expired,
            # someone else's, none) is looked up.
            head: Any = holding if holding is not None and holding.id == assignment_id else None
            if head is None:
                head = _HEAD.one_or_none(conn, {"id": assignment_id})
                if head is None or head.agent_id != agent.id:
                    raise NotFound("no such assignment for this agent")
            if callback_at is not None:
                window = window or self.window_of(conn)
                if not window.now < callback_at <= window.now + MAX_CALLBACK_AHEAD:
                    raise InvalidInput(
                        "callback_at must be in the future and at most"
                        f" {MAX_CALLBACK_AHEAD.days} days ahead",
                        ["body", "callback_at"],
                    )
                require_callback_inside(window.rules, callback_at)
            verdict = self._verdict(head.user_id)
            done = _COMPLETE.one(
                conn,
                {
                    "agent_id": agent.id,
                    "id": assignment_id,
                    "queue_type": head.queue_type,
                    "entry_id": head.queue_entry_id,
                    "user_id": head.user_id,
                    "assigned_at": head.assigned_at,
                    "outcome": str(outcome),
                    "callback_at": callback_at,
                    "notes": notes,
                    "change": rule.score_change,
                    "delay_seconds": int(rule.delay.total_seconds()) if rule.delay else None,
                    "successful": rule.successful,
                    "deactivates": rule.deactivates,
                    "min_score": MIN_SCORE,
                    "max_score": MAX_SCORE,
                    "verdict_known": verdict is not None,
                    "verdict_type": verdict.queue_type and str(verdict.queue_type)
                    if verdict
                    else None,
                    "verdict_reason": verdict.reason if verdict else None,
                    "suppresses": rule.suppresses_number,
                },
            )
        if done.result == "not_found":  # the holder cannot change; only a vanished row
            raise NotFound("no such assignment for this agent")
        if done.result in _CONFLICTS:
            raise Conflict(_CONFLICTS[done.result])
        metrics.OUTCOMES.labels(head.queue_type, str(outcome)).inc()
        log.info(
            "assignment.completed",
            extra={"agent_id": agent.id, "user_id": head.user_id, "outcome": str(outcome)},
        )
        score = (
            {
                "current_score": done.current_score,
                "next_call_after": done.next_call_after,
                "is_active": done.is_active,
                "current_queue_type": done.current_queue_type,
            }
            if done.score_found
            else None
        )
        return Completed(done, score)

    # -- steps ---------------------------------------------------------------------------------

    def _verdict(self, user_id: int) -> Verdict | None:
        """The replica's verdict on the user, read before any lock is taken. If the replica is
        down the outcome still counts: the user is reclassified by the next population or claim
        instead. (A do_not_contact suppresses the number handed out, kept on the ledger row: it
        needs nothing from the replica.)"""
        try:
            return self.replica.classify([user_id])[user_id]
        except ReplicaUnavailable:
            log.warning("assignment.reclassify_skipped", extra={"user_id": user_id})
            return None


def _raise_for(result: str) -> None:
    """The assignment functions' refusals as domain errors: another agent's assignment is not
    found (so ids cannot be probed), one that is no longer live is a conflict."""
    if result == "not_found":
        raise NotFound("no such assignment for this agent")
    if result == "not_active":
        raise Conflict("the assignment is no longer active")
