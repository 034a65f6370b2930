"""Handing the next valid user to an agent (SPEC 3.3), from a queue or straight from the scores.

A request uses one pooled connection from start to end. Its first statement authenticates the
agent, reads the flags in force, tells whether the agent already holds a user and whether any
lease is overdue, takes the queue's swap lock and locks the first pending entry; the first
attempt runs in that transaction.

Each attempt is its own short transaction:

* the queue's swap lock is taken *shared*, so a claim that meets a refresh waits for the swap to
  commit instead of finding every pending row locked and answering 204;
* the first pending entry in serving order is taken with ``FOR UPDATE SKIP LOCKED`` on the partial
  index ``(queue_position, id) WHERE status = 'pending'``: concurrent agents each get a different
  row without queueing behind one another;
* the score row and (when validation is on) the replica are checked; a failing entry is marked
  ``invalid`` and committed, and the next attempt starts;
* the ledger row is inserted under the partial unique indexes that make "one active assignment
  per user" and "per agent" the database's guarantee, not the code's.

The replica is read with the entry locked for at most one bounded statement round; a replica
error rolls back only the attempt in progress, leaving the entry pending.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, Row, text
from sqlalchemy.exc import DBAPIError

from app import metrics
from app.agents import AGENT_COLUMNS, BY_TOKEN, AgentIdentity, hash_token, identity
from app.errors import Conflict, ReplicaUnavailable, ServiceBusy, Unauthorized
from app.flags import Flags
from app.queues.kinds import (
    KINDS,
    SWAP_LOCK_KEY,
    QueueKind,
    QueueType,
    candidates_sql,
    queue_reason,
)
from app.queues.leases import sweep_expired_leases
from app.queues.ledger import held_by
from app.queues.transitions import Reclassification, reclassify
from app.queues.views import ASSIGNMENT_COLUMNS, details_json
from app.replica.classification import UserFacts, Verdict, classify
from app.replica.reader import Contact, Replica
from app.statements import Statement

log = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 2


class ValidationAttemptsExhausted(ServiceBusy):
    code = "ValidationAttemptsExhausted"
    retry_after = RETRY_AFTER_SECONDS


@dataclass(frozen=True, slots=True)
class ClaimSettings:
    lease_seconds: int
    max_validation_attempts: int
    cooling_period_minutes: int
    skip_cooldown_minutes: int


@dataclass(slots=True)
class Claimed:
    assignment: Any  # a row with ASSIGNMENT_COLUMNS
    contact: Contact | None
    resumed: bool


@dataclass(slots=True)
class _Ask:
    """One next-user request, as every attempt sees it."""

    agent: AgentIdentity
    kind: QueueKind
    validate: bool
    started: float
    # The open transaction already holds the queue's swap lock (taken by the first statement).
    swap_locked: bool = False
    # The entry the first statement locked, for the first attempt.
    entry: Any = None


def _entry_columns(kind: QueueKind) -> list[tuple[str, str]]:
    """What an attempt needs of an entry (alias ``e``) and its score row (alias ``s``, read, not
    locked: the lock order is entry, ledger, score row), as (expression, label)."""
    return [
        ("e.id", "id"),
        ("e.user_id", "user_id"),
        ("e.claim_id", "claim_id"),
        ("e.priority_score", "priority_score"),
        ("e.queue_position", "queue_position"),
        ("e.queue_reason", "queue_reason"),
        *((f"e.{c}", c) for c in kind.detail_columns),
        ("s.user_id IS NOT NULL", "scored"),
        ("s.is_active", "is_active"),
        ("s.current_queue_type", "current_queue_type"),
        ("coalesce(s.next_call_after > now(), false)", "not_due"),
    ]


def _first_pending(kind: QueueKind, condition: str = "") -> str:
    """The first pending entry in serving order, locked with SKIP LOCKED on the partial index
    ``(queue_position, id) WHERE status = 'pending'``."""
    return (
        f"SELECT * FROM {kind.table} WHERE status = 'pending'{condition}"
        " ORDER BY queue_position, id LIMIT 1 FOR UPDATE SKIP LOCKED"
    )


# One round trip opens a request: who is asking (by token, or by id for in-process callers),
# with which flags, whether they hold a user already, whether any lease is overdue; and, when
# the first attempt is to run in this transaction (nothing held, nothing to sweep), the queue's
# swap lock, shared, then the first pending entry, locked.
#
# Order inside the statement: the entry's scan (``e``) is gated on ``lk.locked``, so the swap
# lock is held before any entry is locked, the same order as a swap's (swap lock, then
# entries): no deadlock. The statement's snapshot,
# though, predates the lock: if a swap committed in between, the entries it replaced are gone
# (SKIP LOCKED passes over deleted rows) and its new ones are invisible here. So an empty
# ``e`` is not an empty queue: the first attempt then selects again in a statement of its own,
# whose snapshot follows the swap. ``locked`` is NULL when the lock was not taken (and then no
# entry was looked for). OFFSET 0 keeps ``h``, ``o`` and ``lk`` subqueries of their own: pulled
# up, their EXISTS tests would be evaluated twice.
_OPEN = """
SELECT {agent_columns}, h.holding, o.overdue, lk.locked, {entry_columns}
  FROM agents ag
 CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM assignments
                                     WHERE agent_id = ag.id AND status = 'active'
                                       AND lease_expires_at > now()) AS holding OFFSET 0) h
 CROSS JOIN LATERAL (SELECT EXISTS (SELECT 1 FROM assignments
                                     WHERE status = 'active'
                                       AND lease_expires_at <= now()) AS overdue OFFSET 0) o
 CROSS JOIN LATERAL (SELECT CASE WHEN NOT h.holding AND NOT o.overdue THEN
                            (SELECT 1 FROM (SELECT pg_advisory_xact_lock_shared(:swap_key,
                                                                                :swap_id)) l)
                            END AS locked
                     OFFSET 0) lk
  LEFT JOIN LATERAL ({first_pending}) e ON true
  LEFT JOIN user_call_scores s ON s.user_id = e.user_id
 WHERE {where}
"""


def _open_statement(kind: QueueKind, where: str) -> Statement:
    """The opening row is also the entry: its columns keep the entry's labels (Statement
    refuses a row whose labels collide)."""
    return Statement(
        _OPEN.format(
            agent_columns=AGENT_COLUMNS,
            entry_columns=", ".join(f"{x} AS {label}" for x, label in _entry_columns(kind)),
            first_pending=_first_pending(kind, " AND lk.locked IS NOT NULL"),
            where=where,
        )
    )


_OPEN_BY_TOKEN = {kind.table: _open_statement(kind, BY_TOKEN) for kind in KINDS.values()}
_OPEN_BY_ID = {kind.table: _open_statement(kind, "ag.id = :agent_id") for kind in KINDS.values()}
_SWAP_LOCK = Statement("SELECT pg_advisory_xact_lock_shared(:key, :id)")


def _score_problem(entry: Any, kind: QueueKind) -> str | None:
    if not entry.scored:
        return "score_row_missing"
    if not entry.is_active:
        return "inactive"
    if entry.current_queue_type != kind.queue_type:
        return "queue_type_changed"
    if entry.not_due:
        return "not_due"
    return None


class _AgentBusy(Exception):
    """The agent got an assignment from a concurrent request (a double click)."""


class _Empty(Exception):
    pass


class _Retry(Exception):
    """The attempt lost a race that has resolved itself since; it changed nothing."""


# ON CONFLICT DO NOTHING covers both partial unique indexes (one active assignment per user,
# one per agent): losing the race returns no row instead of raising, so no savepoint is needed.
_INSERT_ASSIGNMENT = f"""
    INSERT INTO assignments (agent_id, user_id, queue_type, source, queue_entry_id, claim_id,
                             priority_score, queue_position, queue_reason, details,
                             lease_expires_at, claim_ms)
    VALUES (:agent_id, :user_id, :queue_type, :source, :entry_id, :claim_id, :priority_score,
            :queue_position, :queue_reason, CAST(:details AS jsonb),
            now() + make_interval(secs => :lease), :claim_ms)
    ON CONFLICT DO NOTHING
    RETURNING {ASSIGNMENT_COLUMNS}
"""


def _insert_statement(entry_table: str | None) -> Statement:
    if entry_table is None:
        return Statement(_INSERT_ASSIGNMENT)
    # The entry becomes 'assigned' in the same statement, only if the ledger row went in.
    return Statement(
        f"WITH ins AS ({_INSERT_ASSIGNMENT}),"
        f" upd AS (UPDATE {entry_table} SET status = 'assigned', assigned_to_agent = :agent_id,"
        f"  assigned_at = now(), updated_at = now()"
        f"  WHERE id = :entry_id AND EXISTS (SELECT 1 FROM ins))"
        f" SELECT * FROM ins"
    )


_INSERTS = {None: _insert_statement(None)} | {
    kind.table: _insert_statement(kind.table) for kind in KINDS.values()
}


def _next_entry_statement(kind: QueueKind) -> Statement:
    """The first pending entry in serving order, locked, with its score row."""
    columns = ", ".join(f"{x} AS {label}" for x, label in _entry_columns(kind))
    return Statement(
        f"SELECT {columns} FROM ({_first_pending(kind)}) e"
        " LEFT JOIN user_call_scores s ON s.user_id = e.user_id"
    )


_NEXT_ENTRY = {kind.table: _next_entry_statement(kind) for kind in KINDS.values()}
# Direct mode: the first lead in serving order, its score row taken with SKIP LOCKED.
_DIRECT_LEAD = Statement(
    candidates_sql(live_leases_only=False) + " LIMIT 1 FOR UPDATE OF s SKIP LOCKED"
)


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
        flags_for: Callable[[Mapping[str, str]], Flags],
    ) -> None:
        self.engine = engine
        self.replica = replica
        self.settings = settings
        # The flags in force for given run-time overrides (the environment supplies the rest).
        self.flags_for = flags_for

    def next_user_for_token(
        self, token: str, queue_type: QueueType
    ) -> tuple[AgentIdentity, Claimed | None]:
        """The route's entry point: authentication, flags and claim on one connection."""
        started = time.perf_counter()
        with self.engine.connect() as conn:
            state = self._open(conn, queue_type, {"token_hash": hash_token(token)})
            if state is None:
                raise Unauthorized("a valid agent bearer token is required")
            agent = identity(state)
            flags = self.flags_for(agent.flag_overrides)
            return agent, self._observed(conn, agent, queue_type, flags, state, started)

    def next_user(
        self, agent: AgentIdentity, queue_type: QueueType, flags: Flags
    ) -> Claimed | None:
        """The agent's next user, their current assignment again, or None when nobody is left."""
        started = time.perf_counter()
        with self.engine.connect() as conn:
            state = self._open(conn, queue_type, {"agent_id": agent.id})
            if state is None:
                raise Unauthorized("no such agent")
            return self._observed(conn, agent, queue_type, flags, state, started)

    def _open(self, conn: Connection, queue_type: QueueType, who: dict[str, Any]) -> Any:
        statement = (_OPEN_BY_TOKEN if "token_hash" in who else _OPEN_BY_ID)[
            KINDS[queue_type].table
        ]
        params = {**who, "swap_key": SWAP_LOCK_KEY, "swap_id": KINDS[queue_type].swap_lock_id}
        # No row: no such (active) agent, and no lock was taken.
        return statement.one_or_none(conn, params)

    def _observed(
        self,
        conn: Connection,
        agent: AgentIdentity,
        queue_type: QueueType,
        flags: Flags,
        state: Any,
        started: float,
    ) -> Claimed | None:
        result, source = "error", "none"
        try:
            claimed = self._serve(conn, agent, queue_type, flags, state, started)
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
        finally:
            _end(conn)
            metrics.CLAIMS.labels(str(queue_type), source, result).inc()
            metrics.NEXT_USER_SECONDS.labels(str(queue_type)).observe(time.perf_counter() - started)

    def _serve(
        self,
        conn: Connection,
        agent: AgentIdentity,
        queue_type: QueueType,
        flags: Flags,
        state: Any,
        started: float,
    ) -> Claimed | None:
        """Runs in the transaction ``_open`` began, which holds the queue's swap lock and the
        first pending entry unless there was a lease to sweep or a held user to return."""
        kind = KINDS[queue_type]
        locked = state.locked is not None
        ask = _Ask(
            agent,
            kind,
            flags.ENABLE_QUEUE_VALIDATION,
            started,
            swap_locked=locked,
            # The opening row carries the entry it locked (id NULL when none).
            entry=state if locked and state.id is not None else None,
        )
        if state.overdue:
            sweep_expired_leases(conn)
            conn.commit()
            ask.swap_locked = False
        if state.holding:
            held = held_by(conn, agent.id)
            conn.commit()
            ask.swap_locked = False
            if held is not None:
                return self._resume(held, kind)
        mode = flags.serving_mode
        if mode == "direct" and ask.entry is not None:
            # The flags are known only now: an agent served from the scores must not keep a
            # queue entry locked through its attempt (queue-served agents would pass it by).
            conn.commit()
            ask.swap_locked, ask.entry = False, None
        try:
            if mode in ("queues", "dual"):
                try:
                    found = self._attempts(conn, ask, self._queue_attempt)
                except ValidationAttemptsExhausted:
                    if mode != "dual":
                        raise
                    found = None
                if found is not None or mode == "queues":
                    return found
            return self._attempts(conn, ask, self._direct_attempt)
        except _AgentBusy:
            held = held_by(conn, agent.id)
            conn.commit()
            if held is None:  # the concurrent assignment ended in between; let the agent retry
                raise Conflict("a concurrent request changed this agent's assignment") from None
            return self._resume(held, kind)

    # -- an assignment the agent already holds -------------------------------------------------

    def _resume(self, row: Row[Any] | None, kind: QueueKind) -> Claimed | None:
        if row is None:
            return None
        if row.queue_type != kind.queue_type:
            raise Conflict(
                f"the agent holds an active assignment in {row.queue_type}; finish or release it"
            )
        return Claimed(row, self.replica.fetch_contacts(row.user_id), resumed=True)

    # -- queue path ----------------------------------------------------------------------------

    def _attempts(
        self,
        conn: Connection,
        ask: _Ask,
        attempt: Callable[[Connection, _Ask], Claimed | None],
    ) -> Claimed | None:
        """Up to MAX_VALIDATION_ATTEMPTS attempts, each its own transaction."""
        for _ in range(self.settings.max_validation_attempts):
            try:
                result = attempt(conn, ask)
                conn.commit()
            except _Empty:
                conn.rollback()
                return None
            except _Retry:
                conn.rollback()
                continue
            except BaseException:
                conn.rollback()
                raise
            finally:
                # Whatever the first attempt was (a direct-mode one leaves the opened entry
                # alone), its transaction has ended: the lock and the entry's lock with it.
                ask.swap_locked = False
                ask.entry = None
            if result is not None:
                return result
        if attempt == self._queue_attempt and not self._pending_left(conn, ask.kind):
            return None  # the attempts used up the last entries: the queue is empty, not busy
        raise ValidationAttemptsExhausted(
            f"{self.settings.max_validation_attempts} users in a row failed validation;"
            " more remain, retry shortly"
        )

    def _queue_attempt(self, conn: Connection, ask: _Ask) -> Claimed | None:
        agent, kind = ask.agent, ask.kind
        entry = ask.entry
        if entry is None:
            if not ask.swap_locked:
                _SWAP_LOCK.all(conn, {"key": SWAP_LOCK_KEY, "id": kind.swap_lock_id})
            entry = _NEXT_ENTRY[kind.table].one_or_none(conn)
        if entry is None:
            raise _Empty
        problem = _score_problem(entry, kind)
        if problem is not None:
            self._invalidate(conn, ask, entry.user_id, problem, entry.id)
            return None
        facts, contact = self._replica_check(entry.user_id, ask.validate)
        if facts is not None:
            verdict = classify(facts)
            if verdict.queue_type != kind.queue_type:
                reason = f"reclassified: {verdict.reason}"
                self._invalidate(conn, ask, entry.user_id, reason, entry.id)
                self._reclassify(conn, kind, entry.user_id, verdict, agent)
                return None
        if contact is None or not contact.callable:
            self._invalidate(conn, ask, entry.user_id, "no_phone_number", entry.id)
            return None
        entry_details = {c: getattr(entry, c) for c in kind.detail_columns}
        assignment = self._insert_assignment(
            conn,
            ask,
            entry_table=kind.table,
            entry_id=entry.id,
            user_id=entry.user_id,
            claim_id=entry.claim_id,
            priority_score=entry.priority_score,
            queue_position=entry.queue_position,
            queue_reason=entry.queue_reason,
            details=entry_details,
        )
        if assignment is None:
            self._invalidate(conn, ask, entry.user_id, "already_assigned", entry.id)
            return None
        return Claimed(assignment, contact, resumed=False)

    @staticmethod
    def _pending_left(conn: Connection, kind: QueueKind) -> bool:
        """Whether the queue still has pending entries, once any swap in progress has committed
        (the swap lock first, then a statement whose snapshot follows it): the attempts may
        have used up the old snapshot while a new one was being swapped in."""
        _SWAP_LOCK.all(conn, {"key": SWAP_LOCK_KEY, "id": kind.swap_lock_id})
        left = conn.execute(
            text(f"SELECT EXISTS (SELECT 1 FROM {kind.table} WHERE status = 'pending')")
        ).scalar()
        conn.commit()
        return bool(left)

    # -- direct mode ---------------------------------------------------------------------------

    def _direct_attempt(self, conn: Connection, ask: _Ask) -> Claimed | None:
        """Claim straight from user_call_scores with the population's eligibility and order.

        The score row is taken with SKIP LOCKED, so this path never waits on a row lock and cannot
        join a wait cycle with the entry -> ledger -> score order used elsewhere.
        """
        agent, kind = ask.agent, ask.kind
        lead = _DIRECT_LEAD.one_or_none(
            conn,
            {
                "queue_type": str(kind.queue_type),
                "cooling": self.settings.cooling_period_minutes,
            },
        )
        if lead is None:
            raise _Empty
        # The candidate query's snapshot predates the lock: another claim may have handed
        # this user out and committed in between. Seeing that now (a fresh snapshot) avoids
        # inserting a ledger row that would wait on an outcome being recorded for the same
        # user, which itself waits on the score row we hold: a deadlock.
        if conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM assignments WHERE user_id = :u AND status = 'active')"
            ),
            {"u": lead.user_id},
        ).scalar():
            return None
        # Details (claim, requirements) come from the replica in direct mode whatever the
        # validation flag, since there is no entry to carry them.
        facts, contact = self._replica_check(lead.user_id, validate=True)
        assert facts is not None
        verdict = classify(facts)
        if ask.validate and verdict.queue_type != kind.queue_type:
            self._invalidate(conn, ask, lead.user_id, f"reclassified: {verdict.reason}")
            self._reclassify(conn, kind, lead.user_id, verdict, agent)
            return None
        if contact is None or not contact.callable:
            # Nothing to mark in direct mode: hold the lead back like a skip, so the next
            # claim does not find the same uncallable person again.
            self._invalidate(conn, ask, lead.user_id, "no_phone_number")
            conn.execute(
                text(
                    "UPDATE user_call_scores SET next_call_after = now()"
                    " + make_interval(mins => :m), updated_at = now() WHERE user_id = :u"
                ),
                {"m": max(self.settings.skip_cooldown_minutes, 60), "u": lead.user_id},
            )
            return None
        fields = verdict.entry_fields if verdict.queue_type == kind.queue_type else {}
        assignment = self._insert_assignment(
            conn,
            ask,
            entry_table=None,
            entry_id=None,
            user_id=lead.user_id,
            claim_id=fields.get("claim_id"),
            priority_score=lead.current_score,
            queue_position=None,
            queue_reason=queue_reason(kind, lead.current_score),
            details={c: fields.get(c) for c in kind.detail_columns},
        )
        if assignment is None:
            return None
        return Claimed(assignment, contact, resumed=False)

    # -- shared steps --------------------------------------------------------------------------

    def _replica_check(
        self, user_id: int, validate: bool
    ) -> tuple[UserFacts | None, Contact | None]:
        if validate:
            return self.replica.fetch_claim_facts(user_id)
        return None, self.replica.fetch_contacts(user_id)

    @staticmethod
    def _invalidate(
        conn: Connection, ask: _Ask, user_id: int, reason: str, entry_id: Any = None
    ) -> None:
        """Mark the entry (queue mode) invalid and keep the record, which outlives refreshes."""
        kind = ask.kind
        metrics.INVALID_ENTRIES.labels(str(kind.queue_type), reason).inc()
        if entry_id is not None:
            conn.execute(
                text(
                    f"UPDATE {kind.table} SET status = 'invalid', invalid_reason = :r,"
                    " updated_at = now() WHERE id = :id"
                ),
                {"r": reason, "id": entry_id},
            )
        conn.execute(
            text(
                "INSERT INTO entry_invalidations"
                " (queue_type, source, entry_id, user_id, reason, agent_id)"
                " VALUES (:q, :s, :e, :u, :r, :a)"
            ),
            {
                "q": str(kind.queue_type),
                "s": "queue" if entry_id is not None else "direct",
                "e": entry_id,
                "u": user_id,
                "r": reason,
                "a": ask.agent.id,
            },
        )

    @staticmethod
    def _reclassify(
        conn: Connection, kind: QueueKind, user_id: int, verdict: Verdict, agent: AgentIdentity
    ) -> None:
        reclassify(
            conn,
            str(kind.queue_type),
            [
                Reclassification(
                    user_id, verdict.queue_type and str(verdict.queue_type), verdict.reason
                )
            ],
            source="claim",
            agent_id=agent.id,
        )

    def _insert_assignment(
        self,
        conn: Connection,
        ask: _Ask,
        *,
        entry_table: str | None,
        entry_id: Any,
        user_id: int,
        claim_id: int | None,
        priority_score: int,
        queue_position: int | None,
        queue_reason: str | None,
        details: dict[str, Any],
    ) -> Any:
        """The ledger row, or None when another agent holds this user (a lost race, not an error).

        Raises _AgentBusy when this agent already holds an assignment: a concurrent request of
        the same agent won, and the caller returns that assignment instead.
        """
        source = "direct" if entry_table is None else "queue"
        row = _INSERTS[entry_table].one_or_none(
            conn,
            {
                "agent_id": ask.agent.id,
                "user_id": user_id,
                "queue_type": str(ask.kind.queue_type),
                "source": source,
                "entry_id": entry_id,
                "claim_id": claim_id,
                "priority_score": priority_score,
                "queue_position": queue_position,
                "queue_reason": queue_reason,
                "details": details_json(details),
                "lease": self.settings.lease_seconds,
                "claim_ms": int((time.perf_counter() - ask.started) * 1000),
            },
        )
        if row is None:
            # Which index said no? The user's (another agent holds them) or this agent's (a
            # concurrent request of the same agent won). Both rows are committed by now: the
            # insert waited for the other transaction before giving up.
            taken = conn.execute(
                text(
                    "SELECT bool_or(user_id = :u) AS user_taken,"
                    " bool_or(agent_id = :a) AS agent_busy FROM assignments"
                    " WHERE status = 'active' AND (user_id = :u OR agent_id = :a)"
                ),
                {"u": user_id, "a": ask.agent.id},
            ).one()
            if taken.agent_busy:
                raise _AgentBusy
            if taken.user_taken:
                return None
            raise _Retry  # both finished in between: try again, marking nothing
        log.info(
            "claim.assigned",
            extra={
                "queue_type": str(ask.kind.queue_type),
                "source": source,
                "agent_id": ask.agent.id,
                "user_id": user_id,
            },
        )
        return row
