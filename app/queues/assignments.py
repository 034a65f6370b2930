"""What an agent does with an assignment: look at it, extend, release, complete (SPEC 3.3, 3.4).

Every action takes its locks in the service-wide order (the entry's queue swap lock, the entry,
the ledger row, the score row; see the claim functions' migration), so actions, claims, sweeps
and refreshes never deadlock one another. Only the holder may act; another agent's assignment is
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
from app.agents import AgentIdentity, Holding
from app.errors import Conflict, InvalidInput, NotFound, ReplicaUnavailable
from app.queues.claims import ClaimSettings
from app.queues.ledger import held_by
from app.queues.outcomes import MAX_CALLBACK_AHEAD, MAX_SCORE, MIN_SCORE, RULES, Outcome
from app.replica.classification import Verdict, classify
from app.replica.reader import Contact, Replica
from app.rules.calling import CallingWindow, require_callback_inside
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
    " :suppress_key)"
)
_LOCK_LEDGER = text(
    "SELECT *, status = 'active' AND lease_expires_at > now() AS live"
    " FROM assignments WHERE id = :id FOR UPDATE"
)

# A callback's row, the source of its hand-out: locked before the ledger row.
_LOCK_CALLBACK = text("SELECT 1 FROM callbacks WHERE id = :id FOR UPDATE")
# A callback whose hand-out was released is due again: at once (re-queued), or after the skip
# cooldown (skipped). Only while it is still this hand-out's (not cancelled meanwhile).
_CALLBACK_BACK = text(
    "UPDATE callbacks SET status = 'scheduled',"
    " due_at = CASE WHEN :delay > 0 THEN GREATEST(due_at, now() + make_interval(mins => :delay))"
    " ELSE due_at END, updated_at = now()"
    " WHERE id = :id AND assignment_id = :assignment_id AND status = 'assigned'"
)

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
        phone_key: Callable[[str | None], str | None],
        window_of: Callable[[Connection], CallingWindow],
    ) -> None:
        self.engine = engine
        # A completion is a read and one function call: each its own transaction.
        self.autocommit = autocommit
        self.replica = replica
        self.settings = settings
        # The do-not-call list's key of a number (a do_not_contact outcome adds the user's).
        self.phone_key = phone_key
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
        """A new lease of LEASE_SECONDS from now. Only the ledger row changes: no entry lock."""
        with self.engine.begin() as conn:
            row = self._lock_ledger(conn, assignment_id, agent.id)
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
        A callback being served goes back to ``scheduled``: still due when re-queued, due again
        after the skip cooldown when skipped (SPEC 7.2).

        ``forced`` is a supervisor's release of anyone's assignment; it always re-queues.
        """
        requeue = requeue or forced
        with self.engine.begin() as conn:
            head = self._head(conn, assignment_id, None if forced else agent.id)
            # The order everywhere: swap lock and entry, then ledger row, then score row.
            if head.queue_entry_id is not None:
                conn.execute(text("SELECT cq_swap_lock_shared(:q)"), {"q": head.queue_type})
                conn.execute(
                    text("SELECT cq_lock_entry(:q, :id)"),
                    {"q": head.queue_type, "id": head.queue_entry_id},
                )
            if head.callback_id is not None:
                conn.execute(_LOCK_CALLBACK, {"id": head.callback_id})
            row = self._lock_ledger(conn, assignment_id, None)
            self._require_live(row)
            if forced:
                reason = f"forced by supervisor {agent.name}" + (f": {reason}" if reason else "")
            row = conn.execute(
                text(
                    "UPDATE assignments SET status = 'released', release_reason = :r,"
                    " finished_at = clock_timestamp(), updated_at = clock_timestamp()"
                    " WHERE id = :id RETURNING *"
                ),
                {"r": reason, "id": assignment_id},
            ).one()
            if row.queue_entry_id is not None:
                conn.execute(
                    text(
                        "SELECT cq_set_entry(:q, :id, :status, ARRAY['assigned'], NULL, NULL, NULL)"
                    ),
                    {
                        "q": row.queue_type,
                        "id": row.queue_entry_id,
                        "status": "pending" if requeue else "skipped",
                    },
                )
            if row.callback_id is not None:
                conn.execute(
                    _CALLBACK_BACK,
                    {
                        "id": row.callback_id,
                        "assignment_id": row.id,
                        "delay": 0 if requeue else self.settings.skip_cooldown_minutes,
                    },
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
        conn: Connection | None = None,
        window: CallingWindow | None = None,
        holding: Holding | None = None,
    ) -> Completed:
        """The outcome, the score row and the reclassification the replica asks for, in one
        transaction (``cq_complete``); the replica is read first, with no lock held. A
        ``callback_at`` must be in the calling window; a do_not_contact puts the user's number
        on the do-not-call list in the same transaction.

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
            verdict, suppress_key = self._verdict(head.user_id, outcome)
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
                    "suppress_key": suppress_key,
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

    def _verdict(self, user_id: int, outcome: Outcome) -> tuple[Verdict | None, str | None]:
        """The replica's verdict on the user, read before any lock is taken, and for a
        do_not_contact the do-not-call key of the user's number (the same one statement). If
        the replica is down the outcome still counts: the user is reclassified by the next
        population or claim instead, and the number cannot be added (logged; the user is
        deactivated all the same)."""
        try:
            if outcome is not Outcome.DO_NOT_CONTACT:
                return self.replica.classify([user_id])[user_id], None
            facts, contact = self.replica.fetch_claim_facts(user_id)
            return classify(facts), self.phone_key(contact.phone_number if contact else None)
        except ReplicaUnavailable:
            log.warning(
                "assignment.reclassify_skipped",
                extra={
                    "user_id": user_id,
                    "number_not_suppressed": outcome is Outcome.DO_NOT_CONTACT,
                },
            )
            return None, None

    @staticmethod
    def _head(conn: Connection, assignment_id: uuid.UUID, agent_id: int | None) -> Row[Any]:
        """The assignment's unchanging columns (holder, user, queue, entry), read without a
        lock; NotFound for someone else's assignment."""
        head = conn.execute(
            text(
                "SELECT agent_id, user_id, queue_type, queue_entry_id, callback_id"
                " FROM assignments WHERE id = :id"
            ),
            {"id": assignment_id},
        ).one_or_none()
        if head is None or (agent_id is not None and head.agent_id != agent_id):
            raise NotFound("no such assignment for this agent")
        return head

    @staticmethod
    def _lock_ledger(conn: Connection, assignment_id: uuid.UUID, agent_id: int | None) -> Row[Any]:
        row = conn.execute(_LOCK_LEDGER, {"id": assignment_id}).one_or_none()
        if row is None or (agent_id is not None and row.agent_id != agent_id):
            raise NotFound("no such assignment for this agent")
        return row

    @staticmethod
    def _require_live(row: Row[Any]) -> None:
        if not row.live:
            raise Conflict("the assignment is no longer active")
