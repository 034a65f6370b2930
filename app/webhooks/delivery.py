"""Delivering the outbox (SPEC 8.4): dispatch, lease, send, record.

The changes write their events to ``webhook_events`` in their own transactions (the triggers of
migrations/sql/0013_webhooks/). From there, every server process (and ``callqueue webhooks
deliver``) does the same three steps:

1. **dispatch** (``cq_webhook_dispatch``, one process at a time): each new event becomes a
   delivery to every enabled endpoint subscribed to its type, numbered in that endpoint's
   sequence (``seq``) in the order the events were written;
2. **lease**: due deliveries are taken ``FOR UPDATE SKIP LOCKED`` and leased (``locked_until``)
   in one short statement, so no two processes send the same attempt; a process that dies
   mid-send leaves a lease that runs out, and the attempt is made again (at least once);
3. **send and record**: each is signed (Standard Webhooks, with both secrets during a rotation's
   overlap), sent with the attempt's time limit to the address checked at connection time
   (eight at a time), and the batch's outcomes recorded in one transaction: each attempt in the
   log, its delivery delivered, failed or due again on the schedule, its endpoint's health
   (disabled on 410 or after five days of failures).
"""

from __future__ import annotations

import json
import logging
import ssl
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any
from uuid import UUID

import httpcore2
from sqlalchemy import Connection, Engine, text
from standardwebhooks import Webhook

from app import metrics
from app.config import Settings
from app.webhooks.targets import CheckedBackend, TargetRefused

log = logging.getLogger(__name__)

EVENT_TYPES = (
    "assignment.started",
    "assignment.completed",
    "assignment.released",
    "assignment.expired",
    "callback.booked",
    "callback.cancelled",
    "callback.overdue",
    "user.suppressed",
    "user.erased",
    "population.finished",
    "discovery.finished",
)
TEST_EVENT = "webhook.test"

# After the first attempt fails, the waits before each next one; after the last, failed.
RETRY_WAITS = (
    timedelta(seconds=5),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=5),
    timedelta(hours=10),
    timedelta(hours=10),
)
MAX_RETRY_AFTER = timedelta(hours=24)
FAILING_DISABLES_AFTER = timedelta(days=5)
ROTATION_OVERLAP = timedelta(hours=24)
# What is read of a receiver's answer, at most (it is not kept: only the status counts).
MAX_ANSWER_BYTES = 64 * 1024
# A lease outlasts an attempt's time limit by this much: a sender still running then has died.
LEASE_MARGIN_SECONDS = 60
DISPATCH_BATCH = 500
SEND_BATCH = 50
SEND_THREADS = 8
OVERDUE_BATCH = 500

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Lease:
    """One attempt to make: the delivery, its event, and where and how to sign it."""

    delivery_id: UUID
    attempt: int
    round_attempt: int
    seq: int
    event_id: UUID
    event_type: str
    occurred_at: datetime
    data: dict[str, Any]
    endpoint_id: UUID
    url: str
    secrets: tuple[str, ...]

    def body(self) -> bytes:
        return json.dumps(
            {
                "type": self.event_type,
                "timestamp": self.occurred_at.isoformat(),
                "seq": self.seq,
                "data": self.data,
            },
            separators=(",", ":"),
        ).encode()


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt came to: the receiver's status (None: no answer), how long, and why it
    failed when it did (never the receiver's body, never a secret)."""

    status_code: int | None
    duration_ms: int
    error: str | None
    retry_after: timedelta | None = None

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


_LEASE = text(
    """
    UPDATE webhook_deliveries d
       SET locked_until = :now + make_interval(secs => :lease_seconds),
           attempts = d.attempts + 1, round_attempts = d.round_attempts + 1
      FROM webhook_events ev, webhook_endpoints e
     WHERE d.id IN (SELECT d2.id FROM webhook_deliveries d2
                      JOIN webhook_endpoints e2 ON e2.id = d2.endpoint_id
                     WHERE d2.status = 'pending'
                       AND CASE WHEN CAST(:only AS uuid) IS NULL
                                THEN e2.enabled AND d2.next_attempt_at <= :now
                                     AND (d2.locked_until IS NULL OR d2.locked_until <= :now)
                                ELSE d2.id = CAST(:only AS uuid) END
                     ORDER BY d2.next_attempt_at, d2.seq
                     LIMIT :n
                       FOR UPDATE OF d2 SKIP LOCKED)
       AND ev.id = d.event_id AND e.id = d.endpoint_id
    RETURNING d.id, d.attempts, d.round_attempts, d.seq, ev.id AS event_id, ev.type,
              ev.occurred_at, ev.data, e.id AS endpoint_id, e.url, e.secret,
              e.previous_secret, e.previous_secret_until
    """
)

# Only for deliveries still there: an admin may have removed the endpoint (and with it its
# deliveries) while the batch was being sent.
_LOG_ATTEMPTS = text(
    "INSERT INTO webhook_attempts (delivery_id, endpoint_id, attempt, status_code, duration_ms,"
    " error, attempted_at)"
    " SELECT u.delivery, u.endpoint, u.attempt, u.code, u.ms, u.error, :at"
    " FROM unnest(CAST(:delivery AS uuid[]), CAST(:endpoint AS uuid[]),"
    " CAST(:attempt AS integer[]), CAST(:code AS integer[]), CAST(:ms AS integer[]),"
    " CAST(:error AS text[])) AS u(delivery, endpoint, attempt, code, ms, error)"
    " JOIN webhook_deliveries d ON d.id = u.delivery"
)
_SET_DELIVERIES = text(
    "UPDATE webhook_deliveries d SET status = u.status, locked_until = NULL,"
    " next_attempt_at = coalesce(u.next_at, d.next_attempt_at),"
    " finished_at = CASE WHEN u.status = 'pending' THEN NULL ELSE CAST(:now AS timestamptz) END"
    " FROM unnest(CAST(:id AS uuid[]), CAST(:status AS text[]),"
    " CAST(:next_at AS timestamptz[])) AS u(id, status, next_at)"
    " WHERE d.id = u.id"
)


class Deliverer:
    """Dispatches, leases, sends and records; ``clock`` is the time deliveries are judged by
    (tests move it on to see the schedule through)."""

    def __init__(
        self,
        engine: Engine,
        *,
        timeout_seconds: float,
        private_allowed: bool,
        grace_minutes: int,
        clock: Clock = utc_now,
    ) -> None:
        self.engine = engine
        self.timeout = timeout_seconds
        self.grace_minutes = grace_minutes
        self.clock = clock
        self.pool = httpcore2.ConnectionPool(
            ssl_context=ssl.create_default_context(),
            network_backend=CheckedBackend(private_allowed),
            max_connections=SEND_THREADS,
            retries=0,
        )
        self.senders = ThreadPoolExecutor(SEND_THREADS, thread_name_prefix="webhook-send")

    @classmethod
    def for_settings(cls, engine: Engine, settings: Settings) -> Deliverer:
        """A server process's (or a command's) deliverer, as the settings say."""
        return cls(
            engine,
            timeout_seconds=settings.webhook_timeout_seconds,
            private_allowed=settings.webhook_allow_private or not settings.webhook_targets_checked,
            grace_minutes=settings.callback_grace_minutes,
        )

    def close(self) -> None:
        self.senders.shutdown(wait=True)
        self.pool.close()

    # -- the outbox ----------------------------------------------------------------------------

    def dispatch(self) -> int:
        """Fan new events out to their endpoints; how many events (0 when another process is at
        it: it will have them)."""
        done = 0
        while True:
            with self.engine.begin() as conn:
                n = conn.execute(
                    text("SELECT cq_webhook_dispatch(:n)"), {"n": DISPATCH_BATCH}
                ).scalar_one()
            done += n or 0
            if not n or n < DISPATCH_BATCH:
                return done

    def report_overdue(self) -> int:
        """Write callback.overdue for callbacks that became overdue since the last look."""
        with self.engine.begin() as conn:
            return int(
                conn.execute(
                    text("SELECT cq_report_overdue(:grace, :n)"),
                    {"grace": self.grace_minutes, "n": OVERDUE_BATCH},
                ).scalar_one()
            )

    # -- sending -------------------------------------------------------------------------------

    def deliver_due(self, limit: int = SEND_BATCH) -> int:
        """One round: lease up to ``limit`` due deliveries, send them (SEND_THREADS at a time,
        so one slow receiver does not hold up the others), record them in one transaction; how
        many attempts were made."""
        leases = self.lease(limit, only=None)
        if leases:
            self.record(list(zip(leases, self.senders.map(self.send, leases), strict=True)))
        return len(leases)

    def deliver_now(self, delivery_id: UUID) -> Answer | None:
        """Send one delivery now, whatever its schedule, its lease (a test event's is its
        maker's) and its endpoint's state; None when it is no longer pending."""
        leases = self.lease(1, only=delivery_id)
        if not leases:
            return None
        answer = self.send(leases[0])
        self.record([(leases[0], answer)])
        return answer

    def drain(self, deadline: float | None = None) -> int:
        """Dispatch and deliver until nothing is due (or the monotonic ``deadline`` passes)."""
        made = 0
        while deadline is None or time.monotonic() < deadline:
            self.dispatch()
            n = self.deliver_due()
            made += n
            if n == 0:
                break
        return made

    def lease(self, limit: int, only: UUID | None) -> list[Lease]:
        """Up to ``limit`` due, unleased deliveries of enabled endpoints (or the delivery
        ``only``, whatever its state), leased to this process for the batch's sends."""
        now = self.clock()
        with self.engine.begin() as conn:
            rows = conn.execute(
                _LEASE,
                {
                    "now": now,
                    # Long enough for every send of the batch, SEND_THREADS at a time.
                    "lease_seconds": -(-limit // SEND_THREADS) * self.timeout
                    + LEASE_MARGIN_SECONDS,
                    "only": only,
                    "n": limit,
                },
            ).all()
        leases = []
        for r in rows:
            secrets = [r.secret]
            if r.previous_secret and r.previous_secret_until and r.previous_secret_until > now:
                secrets.append(r.previous_secret)
            leases.append(
                Lease(
                    delivery_id=r.id,
                    attempt=r.attempts,
                    round_attempt=r.round_attempts,
                    seq=r.seq,
                    event_id=r.event_id,
                    event_type=r.type,
                    occurred_at=r.occurred_at,
                    data=r.data,
                    endpoint_id=r.endpoint_id,
                    url=r.url,
                    secrets=tuple(secrets),
                )
            )
        return leases

    def send(self, lease: Lease) -> Answer:
        """One attempt: signed, POSTed within the time limit, at most MAX_ANSWER_BYTES read."""
        body = lease.body()
        sent_at = self.clock()
        signatures = " ".join(
            Webhook(secret).sign(str(lease.event_id), sent_at, body) for secret in lease.secrets
        )
        headers = [
            (b"Content-Type", b"application/json"),
            (b"User-Agent", b"callqueue-webhooks/1"),
            (b"webhook-id", str(lease.event_id).encode()),
            (b"webhook-timestamp", str(int(sent_at.timestamp())).encode()),
            (b"webhook-signature", signatures.encode()),
        ]
        limit = self.timeout
        started = time.monotonic()
        timeouts = {"connect": limit, "read": limit, "write": limit, "pool": limit}
        try:
            with self.pool.stream(
                "POST",
                lease.url,
                headers=headers,
                content=body,
                extensions={"timeout": timeouts},
            ) as response:
                read = 0
                for chunk in response.iter_stream():
                    read += len(chunk)
                    if read >= MAX_ANSWER_BYTES or time.monotonic() - started > limit:
                        break
                status = response.status
                retry_after = _retry_after(response.headers, sent_at)
        except TargetRefused as exc:
            return self._failed(started, str(exc))
        except (httpcore2.UnsupportedProtocol, httpcore2.LocalProtocolError, ValueError):
            return self._failed(started, "the URL cannot be used")
        except httpcore2.TimeoutException:
            return self._failed(started, f"no answer within {limit:g} s")
        except httpcore2.ConnectError as exc:
            return self._failed(started, f"could not connect: {_short(exc)}")
        except (httpcore2.NetworkError, httpcore2.ProtocolError) as exc:
            return self._failed(started, f"{type(exc).__name__}: {_short(exc)}")
        duration_ms = _ms(started)
        if duration_ms > limit * 1000:
            return Answer(None, duration_ms, f"no whole answer within {limit:g} s")
        error = None if 200 <= status < 300 else f"answered {status}"
        return Answer(status, duration_ms, error, retry_after)

    @staticmethod
    def _failed(started: float, error: str) -> Answer:
        return Answer(None, _ms(started), error)

    # -- the outcome ---------------------------------------------------------------------------

    def record(self, results: list[tuple[Lease, Answer]]) -> None:
        """The batch's attempts in the log, each delivery delivered, failed or due again, each
        endpoint's health: one transaction of a few statements whatever the batch's size,
        endpoints' rows taken in ascending id (two senders recording at once lock them in the
        same order)."""
        now = self.clock()
        outcomes = [_outcome(lease, answer, now) for lease, answer in results]
        with self.engine.begin() as conn:
            conn.execute(
                _LOG_ATTEMPTS,
                {
                    "delivery": [lease.delivery_id for lease, _ in results],
                    "endpoint": [lease.endpoint_id for lease, _ in results],
                    "attempt": [lease.attempt for lease, _ in results],
                    "code": [answer.status_code for _, answer in results],
                    "ms": [answer.duration_ms for _, answer in results],
                    "error": [answer.error for _, answer in results],
                    "at": now,
                },
            )
            conn.execute(
                _SET_DELIVERIES,
                {
                    "id": [lease.delivery_id for lease, _ in results],
                    "status": [status for status, _, _ in outcomes],
                    "next_at": [next_at for _, next_at, _ in outcomes],
                    "now": now,
                },
            )
            # An endpoint that took any of the batch is up (unless it said 410 Gone).
            health: dict[UUID, tuple[bool, str | None]] = {}
            for (lease, answer), (_, _, disable) in zip(results, outcomes, strict=True):
                delivered, gone = health.get(lease.endpoint_id, (False, None))
                health[lease.endpoint_id] = (delivered or answer.delivered, gone or disable)
            for endpoint_id in sorted(health, key=str):
                delivered, gone = health[endpoint_id]
                self._endpoint_health(conn, endpoint_id, delivered and gone is None, gone, now)
        for (lease, answer), (status, _, _) in zip(results, outcomes, strict=True):
            metrics.WEBHOOK_ATTEMPTS.labels("delivered" if answer.delivered else "failed").inc()
            if not answer.delivered:
                log.warning(
                    "webhook.attempt_failed",
                    extra={
                        "endpoint_id": str(lease.endpoint_id),
                        "event_id": str(lease.event_id),
                        "attempt": lease.attempt,
                        "status_code": answer.status_code,
                        "error": answer.error,
                        "next": status,
                    },
                )

    @staticmethod
    def _endpoint_health(
        conn: Connection, endpoint_id: UUID, delivered: bool, disable: str | None, now: datetime
    ) -> None:
        """Success clears the endpoint's failing streak; a failure starts one, and a streak of
        FAILING_DISABLES_AFTER (or a 410) disables the endpoint."""
        if delivered:
            conn.execute(
                text(
                    "UPDATE webhook_endpoints SET failing_since = NULL"
                    " WHERE id = :id AND failing_since IS NOT NULL"
                ),
                {"id": endpoint_id},
            )
            return
        conn.execute(
            text(
                """
                UPDATE webhook_endpoints
                   SET failing_since = coalesce(failing_since, :now),
                       enabled = enabled AND CAST(:disable AS text) IS NULL
                                 AND coalesce(failing_since, :now) > :now - :limit,
                       disabled_reason = CASE
                           WHEN NOT enabled THEN disabled_reason
                           WHEN CAST(:disable AS text) IS NOT NULL THEN :disable
                           WHEN coalesce(failing_since, :now) <= :now - :limit
                               THEN 'every attempt failed for 5 days'
                           END,
                       updated_at = now()
                 WHERE id = :id
                """
            ),
            {"id": endpoint_id, "now": now, "disable": disable, "limit": FAILING_DISABLES_AFTER},
        )


def _outcome(
    lease: Lease, answer: Answer, now: datetime
) -> tuple[str, datetime | None, str | None]:
    """(the delivery's status, when it is tried next, why its endpoint is disabled) after this
    attempt: delivered on any 2xx; failed on 410 (and the endpoint disabled) or after the last
    wait of the schedule; else due again after the round's next wait, or the receiver's
    Retry-After on 429 and 503 when longer (at most a day)."""
    if answer.delivered:
        return "delivered", None, None
    if answer.status_code == 410:
        return "failed", None, "the receiver answered 410 Gone"
    if lease.round_attempt > len(RETRY_WAITS):
        return "failed", None, None
    wait = RETRY_WAITS[lease.round_attempt - 1]
    if answer.status_code in (429, 503) and answer.retry_after is not None:
        wait = max(wait, min(answer.retry_after, MAX_RETRY_AFTER))
    return "pending", now + wait, None


def _retry_after(headers: list[tuple[bytes, bytes]], now: datetime) -> timedelta | None:
    """Retry-After as seconds or as an HTTP date; None when absent or unreadable."""
    for name, value in headers:
        if name.lower() != b"retry-after":
            continue
        raw = value.decode("latin-1").strip()
        if raw.isdigit():
            return timedelta(seconds=int(raw))
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(when - now, timedelta(0))
    return None


def _short(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__)[:200]


def _ms(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
