"""Handing the next valid user to an agent (SPEC 3.3): one mechanism for every source.

A user is handed out from a *source*: a due callback (SPEC 7.2), a queue entry, or (direct mode)
a lead taken straight from the scores. Every attempt is the same short transaction whatever the
source; the differences are data (which source, which queue):

1. ``cq_claim`` locks the source row: a due callback the agent may serve, if there is one
   (``FOR UPDATE SKIP LOCKED``), else the first pending entry (the same, after the queue's swap
   lock, so a claim that meets a refresh waits for it instead of answering 204), or in direct
   mode the first candidate whose per-user advisory lock it gets. It also says what
   the score row says now (read, not locked). A request's first attempt also expires lapsed
   leases and returns the agent's live assignment, if any (a retry resumes it);
2. with only that source row locked, for at most one bounded replica read: the replica's
   classification (when validation is on) and the contact details;
3. ``cq_hand_out`` checks this process's do-not-call key against the list's, inserts the ledger
   row under the partial unique indexes that make "one active assignment per user" and "per
   agent" the database's guarantee, then locks the score row and checks it again, then the
   number against the do-not-call list under the number's lock, so the checks and the hand-out
   are one decision; or ``cq_invalidate`` marks the source with the reason it failed, so the
   next attempt moves on;
4. commit.

The order of every lock, and why, is written in the functions (migrations/sql/, the newest
folder). A replica error rolls back only the attempt in progress: the source stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from typing import Any

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import DBAPIError

from app import metrics
from app.auth.identity import AgentIdentity
from app.errors import (
    Conflict,
    OutsideCallingHours,
    ReplicaUnavailable,
    ServiceBusy,
    SuppressionKeyMismatch,
)
from app.flags import Flags
from app.queues.kinds import KINDS, QueueKind, queue_reason
from app.queues.ledger import held_by
from app.queues.views import AssignmentRow, details_document
from app.replica.classification import UserFacts, Verdict, classify
from app.replica.reader import Contact, Replica
from app.rules.calling import CallingWindow
from app.rules.caps import REASON as ATTEMPT_CAP
from app.rules.suppression import KEY_MISMATCH, SuppressionList
from app.statements import Statement
from app.vocabulary import QueueType

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2
# Lapsed leases expired by one request's first attempt, at most.
SWEEP_LIMIT = 1000


class ValidationAttemptsExhausted(ServiceBusy):
    code = "ValidationAttemptsExhausted"
    retry_after = RETRY_AFTER_SECONDS


class Source(StrEnum):
    QUEUE = "queue"
    DIRECT = "direct"
    CALLBACK = "callback"


# Where each serving mode (Flags.serving_mode) looks, in order. A due callback comes before
# either, in every mode (SPEC 7.2): each attempt's cq_claim looks for one first and then says
# which source it took (Source.CALLBACK), in the same round trip.
SOURCES: dict[str, tuple[Source, ...]] = {
    "queues": (Source.QUEUE,),
    "dual": (Source.QUEUE, Source.DIRECT),
    "direct": (Source.DIRECT,),
}


@dataclass(frozen=True, slots=True)
class ClaimSettings:
    lease_seconds: int
    max_validation_attempts: int
    cooling_period_minutes: int
    skip_cooldown_minutes: int
    max_attempts_per_day: int
    max_attempts_per_week: int
    callback_personal_minutes: int


@dataclass(slots=True)
class Claimed:
    assignment: Any  # AssignmentRow, or a ledger row when resumed
    contact: Contact | None
    resumed: bool


@dataclass(slots=True)
class _Ask:
    """One next-user request, as each of its attempts sees it."""

    agent: AgentIdentity
    kind: QueueKind
    validate: bool
    started: float
    # The first attempt also sweeps lapsed leases and looks for the agent's live assignment.
    opened: bool = False
    # Users this request has already turned down: never taken twice (direct mode has no entry
    # to mark).
    tried: list[int] = field(default_factory=list)
    # The last attempt met a swap: the next one waits for it first (cq_claim).
    after_swap: bool = False


class _Next(Enum):
    """How an attempt ended when it handed nobody out."""

    EMPTY = "empty"  # the source has nobody left
    AGAIN = "again"  # the source was turned down (and marked); try the next one
    AGENT_BUSY = "agent_busy"  # a concurrent request of this agent got an assignment


@dataclass(frozen=True, slots=True)
class _Held:
    assignment_id: Any


_CLAIM = Statement(
    "SELECT * FROM cq_claim(:agent_id, :queue_type, :source, :open, CAST(:tried AS bigint[]),"
    " :cooling, :sweep_limit, :max_day, :max_week, :personal)"
)
_HAND_OUT = Statement(
    "SELECT * FROM cq_hand_out(:agent_id, :queue_type, :source, :item_id, :user_id, :claim_id,"
    " :priority_score, :queue_position, :queue_reason, CAST(:details AS jsonb), :lease,"
    " :claim_ms, :max_day, :max_week, :daily_exempt, :phone_key, :key_fingerprint)"
)
_INVALIDATE = Statement(
    "SELECT cq_invalidate(:agent_id, :queue_type, :source, :item_id, :user_id, :status, :reason,"
    " :reclassify, :to_type, :to_reason)"
)
# Direct mode has no entry to mark: an uncallable lead is held back like a skip instead, so the
# next request does not meet the same person first again.
_HOLD_BACK = Statement(
    "UPDATE user_call_scores SET next_call_after = now() + make_interval(mins => :minutes),"
    " updated_at = now() WHERE user_id = :user_id RETURNING user_id"
)
_SWAP_LOCK = Statement("SELECT cq_swap_lock_shared(:queue_type)")
_PENDING_LEFT = {
    kind.queue_type: Statement(
        f"SELECT EXISTS (SELECT 1 FROM {kind.table} WHERE status = 'pending')"
    )
    for kind in KINDS.values()
}


@contextlib.contextmanager
def _transactional(engine: Engine, given: Connection | None) -> Iterator[Connection]:
    """The connection the attempts run on, as transactions: the request's (switched out of
    autocommit; it is idle) or a checkout of our own."""
    if given is None:
        with engine.connect() as conn:
            yield conn
    else:
        yield given.execution_options(isolation_level=given.default_isolation_level)


def _end(conn: Connection) -> None:
    """Close whatever transaction an error left open (a no-op after a commit). A connection
    that broke is discarded by the pool; the error that broke it is the one to report."""
    with contextlib.suppress(DBAPIError):
        conn.rollback()


class ClaimService:
    def __init__(
        self,
        engine: Engine,
        replica: Replica,
        settings: ClaimSettings,
        suppression: SuppressionList,
        window_of: Callable[[Connection], CallingWindow],
    ) -> None:
        self.engine = engine
        self.replica = replica
        self.settings = settings
        # The do-not-call list as this process keys it: the hash of a number about to be handed
        # out, and the key's fingerprint, which the hand-out checks against the list's.
        self.suppression = suppression
        # The calling rules in force and the database's clock, for callers that did not read
        # them with the agent (app.api.deps reads them in the authentication's round trip).
        self.window_of = window_of

    def next_user(
        self,
        agent: AgentIdentity,
        queue_type: QueueType,
        flags: Flags,
        conn: Connection | None = None,
        window: CallingWindow | None = None,
    ) -> Claimed | None:
        """The agent's next user, their current assignment again, or None when nobody is left.
        Outside calling hours: OutsideCallingHours, whatever the agent holds.

        ``conn``: the request's connection (idle, in autocommit), used instead of a checkout of
        its own; the attempts run on it as transactions. ``window``: the calling rules and the
        clock as read with the agent (read here when not given)."""
        started = time.perf_counter()
        result, source = "error", "none"
        try:
            claimed = self._serve(agent, queue_type, flags, started, conn, window)
            if claimed is None:
                result = "empty"
            else:
                result = "resumed" if claimed.resumed else "assigned"
                source = claimed.assignment.source
            return claimed
        except ValidationAttemptsExhausted:
            result = "exhausted"
            raise
        except Conflict:
            result = "conflict"
            raise
        except ReplicaUnavailable:
            result = "replica_error"
            raise
        except OutsideCallingHours:
            result = "outside_hours"
            raise
        except SuppressionKeyMismatch:
            result = "key_mismatch"
            raise
        finally:
            metrics.CLAIMS.labels(str(queue_type), source, result).inc()
            metrics.NEXT_USER_SECONDS.labels(str(queue_type)).observe(time.perf_counter() - started)

    def _serve(
        self,
        agent: AgentIdentity,
        queue_type: QueueType,
        flags: Flags,
        started: float,
        given: Connection | None,
        window: CallingWindow | None,
    ) -> Claimed | None:
        kind = KINDS[queue_type]
        ask = _Ask(agent, kind, flags.ENABLE_QUEUE_VALIDATION, started)
        with _transactional(self.engine, given) as conn:
            try:
                (window or self.window_of(conn)).require_open()
                exhausted = False
                for source in SOURCES[flags.serving_mode]:
                    found = self._attempts(conn, ask, source)
                    if isinstance(found, _Held):
                        return self._resume(conn, agent, kind)
                    if isinstance(found, Claimed):
                        return found
                    if found is _Next.AGENT_BUSY:
                        return self._resume(conn, agent, kind, concurrent=True)
                    # Attempts used up while entries remain: dual mode falls back to direct.
                    exhausted = exhausted or found is _Next.AGAIN
                if exhausted:
                    raise ValidationAttemptsExhausted(
                        f"{self.settings.max_validation_attempts} users in a row failed"
                        " validation; more remain, retry shortly"
                    )
                return None
            finally:
                _end(conn)

    def _attempts(self, conn: Connection, ask: _Ask, source: Source) -> Any:
        """Up to MAX_VALIDATION_ATTEMPTS attempts on one source, each its own transaction.
        Returns what the last attempt found: Claimed, _Held, or a _Next."""
        for _ in range(self.settings.max_validation_attempts):
            try:
                found = self._attempt(conn, ask, source)
                conn.commit()
            except BaseException:
                conn.rollback()
                raise
            if found is not _Next.AGAIN:
                return found
        if source is Source.QUEUE and not self._pending_left(conn, ask.kind):
            return _Next.EMPTY  # the attempts used up the last entries: empty, not busy
        return _Next.AGAIN

    def _attempt(self, conn: Connection, ask: _Ask, mode: Source) -> Any:
        """One attempt on the serving mode's source ``mode``; what it took (``source``) is a due
        callback or that source's next user."""
        kind = ask.kind
        if ask.after_swap:
            _SWAP_LOCK.all(conn, {"queue_type": str(kind.queue_type)})
            ask.after_swap = False
        item = _CLAIM.one(
            conn,
            {
                "agent_id": ask.agent.id,
                "queue_type": str(kind.queue_type),
                "source": mode.value,
                "open": not ask.opened,
                "tried": ask.tried,
                "cooling": self.settings.cooling_period_minutes,
                "sweep_limit": SWEEP_LIMIT,
                "max_day": self.settings.max_attempts_per_day,
                "max_week": self.settings.max_attempts_per_week,
                "personal": self.settings.callback_personal_minutes,
            },
        )
        ask.opened = True
        for queue, count in (item.swept or {}).items():
            metrics.LEASE_EXPIRIES.labels(queue).inc(count)
        if item.source is None:
            return _Next.EMPTY
        if item.source == "held":
            return _Held(item.item_id)
        if item.source == "swap":
            # No entry, and a swap under way: the next attempt waits for it before anything
            # else, holding nothing (cq_claim), and looks again.
            ask.after_swap = True
            return _Next.AGAIN
        source = Source(item.source)
        if item.problem is not None:
            status = "skipped" if item.problem == ATTEMPT_CAP else "invalid"
            self._invalidate(conn, ask, source, item, item.problem, status=status)
            return _Next.AGAIN

        # Direct mode and callbacks read the facts whatever the validation flag: the replica
        # gives the details (claim, requirements) that an entry carries.
        facts, contact = self._replica_check(
            item.user_id, ask.validate or source is not Source.QUEUE
        )
        verdict = classify(facts) if facts is not None else None
        if ask.validate and verdict is not None and verdict.queue_type != kind.queue_type:
            self._invalidate(conn, ask, source, item, f"reclassified: {verdict.reason}", verdict)
            return _Next.AGAIN
        if contact is None or not contact.callable:
            self._invalidate(conn, ask, source, item, "no_phone_number")
            if source is Source.DIRECT and self.settings.skip_cooldown_minutes > 0:
                _HOLD_BACK.all(
                    conn,
                    {"minutes": self.settings.skip_cooldown_minutes, "user_id": item.user_id},
                )
            return _Next.AGAIN

        if source is Source.QUEUE:
            claim_id, reason, details = item.claim_id, item.queue_reason, item.details
        else:
            fields = (
                verdict.entry_fields
                if verdict is not None and verdict.queue_type == kind.queue_type
                else {}
            )
            claim_id = fields.get("claim_id")
            reason = queue_reason(kind, item.priority_score)
            details = details_document({c: fields.get(c) for c in kind.detail_columns})
        out = _HAND_OUT.one(
            conn,
            {
                **_source_params(ask, source, item),
                "claim_id": claim_id,
                "priority_score": item.priority_score,
                "queue_position": item.queue_position,
                "queue_reason": reason,
                "details": json.dumps(details),
                "lease": self.settings.lease_seconds,
                "claim_ms": int((time.perf_counter() - ask.started) * 1000),
                "max_day": self.settings.max_attempts_per_day,
                "max_week": self.settings.max_attempts_per_week,
                # A callback the person asked for is exempt from the daily cap (SPEC 7.3).
                "daily_exempt": source is Source.CALLBACK,
                "phone_key": self.suppression.phone_key(contact.phone_number),
                "key_fingerprint": self.suppression.fingerprint,
            },
        )
        if out.result == "key_mismatch":
            raise SuppressionKeyMismatch(KEY_MISMATCH)
        if out.result == "assigned":
            log.info(
                "claim.assigned",
                extra={
                    "queue_type": str(kind.queue_type),
                    "source": source.value,
                    "agent_id": ask.agent.id,
                    "user_id": item.user_id,
                },
            )
            row = AssignmentRow(
                id=out.assignment_id,
                status="active",
                queue_type=str(kind.queue_type),
                source=source.value,
                queue_entry_id=item.item_id if source is Source.QUEUE else None,
                callback_id=item.item_id if source is Source.CALLBACK else None,
                callback_due_at=out.callback_due_at,
                user_id=item.user_id,
                claim_id=claim_id,
                priority_score=item.priority_score,
                queue_position=item.queue_position,
                queue_reason=reason,
                assigned_at=out.assigned_at,
                lease_expires_at=out.lease_expires_at,
                outcome=None,
                details=details,
            )
            return Claimed(row, contact, resumed=False)
        if out.result == "agent_busy":
            return _Next.AGENT_BUSY
        if out.problem is not None:  # user_taken or invalid: the function marked the source
            metrics.INVALID_ENTRIES.labels(str(kind.queue_type), out.problem).inc()
        ask.tried.append(item.user_id)
        return _Next.AGAIN  # user_taken, invalid, or retry (both conflicts ended meanwhile)

    # -- an assignment the agent already holds -------------------------------------------------

    def _resume(
        self, conn: Connection, agent: AgentIdentity, kind: QueueKind, *, concurrent: bool = False
    ) -> Claimed:
        row = held_by(conn, agent.id)
        conn.commit()
        if row is None:
            if concurrent:  # the concurrent assignment ended in between; let the agent retry
                raise Conflict("a concurrent request changed this agent's assignment")
            raise Conflict("the agent's assignment ended while it was being returned; retry")
        if row.queue_type != kind.queue_type:
            raise Conflict(
                f"the agent holds an active assignment in {row.queue_type}; finish or release it"
            )
        return Claimed(row, self.replica.fetch_contacts(row.user_id), resumed=True)

    # -- shared steps --------------------------------------------------------------------------

    @staticmethod
    def _pending_left(conn: Connection, kind: QueueKind) -> bool:
        """Whether the queue still has pending entries, once any swap in progress has committed
        (the swap lock first, then a statement whose snapshot follows it): the attempts may have
        used up the old snapshot while a new one was being swapped in."""
        _SWAP_LOCK.all(conn, {"queue_type": str(kind.queue_type)})
        left = _PENDING_LEFT[kind.queue_type].scalar(conn)
        conn.commit()
        return bool(left)

    def _replica_check(
        self, user_id: int, validate: bool
    ) -> tuple[UserFacts | None, Contact | None]:
        if validate:
            return self.replica.fetch_claim_facts(user_id)
        return None, self.replica.fetch_contacts(user_id)

    @staticmethod
    def _invalidate(
        conn: Connection,
        ask: _Ask,
        source: Source,
        item: Any,
        reason: str,
        verdict: Verdict | None = None,
        *,
        status: str = "invalid",
    ) -> None:
        """Mark the source with why it failed (a queue entry becomes ``invalid``, or ``skipped``
        for an attempt cap), keep the record, and move the user where the replica placed
        them."""
        kind = ask.kind
        metrics.INVALID_ENTRIES.labels(str(kind.queue_type), reason).inc()
        ask.tried.append(item.user_id)
        _INVALIDATE.all(
            conn,
            {
                **_source_params(ask, source, item),
                "status": status,
                "reason": reason,
                "reclassify": verdict is not None,
                "to_type": verdict.queue_type and str(verdict.queue_type) if verdict else None,
                "to_reason": verdict.reason if verdict else None,
            },
        )


def _source_params(ask: _Ask, source: Source, item: Any) -> dict[str, Any]:
    """Which agent, queue and source row the hand-out or the invalidation is about."""
    return {
        "agent_id": ask.agent.id,
        "queue_type": str(ask.kind.queue_type),
        "source": source.value,
        "item_id": item.item_id,
        "user_id": item.user_id,
    }
