"""The population's single flight: a session advisory lock on a connection of its own, held as a
lease.

The lock is a PostgreSQL session lock, so it needs a session: a direct connection
(DATABASE_DIRECT_URL), never one through a transaction pooler, which would hand the lock's
server connection to other clients and keep the lock after the run.

A session lock lasts as long as the backend that holds it. A backend notices that its client
went away only when something tells it: a FIN or RST (a crashed process: at once), TCP
keepalives (a vanished host: after the keepalive bound), or nothing at all when a middlebox
keeps acknowledging on the dead client's behalf (a userspace proxy, some NATs and load
balancers). So the lock is also a lease: the session runs with ``idle_session_timeout`` of
``lease_seconds``, and a heartbeat thread keeps it busy every quarter of that. If the holder's
host vanishes or is cut off, the heartbeats stop and the server ends the session, freeing the
lock, within the lease whatever the network in between does. On the holder's side, a heartbeat
that fails or gets no answer within its deadline marks the lock lost, and the run stops writing
(``PopulationLock.check``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from app.deadlines import Deadline
from app.errors import ConfigError, PopulationLockLost, PopulationRunning

log = logging.getLogger(__name__)

_HELD = text(
    "SELECT pg_backend_pid() = :pid AND EXISTS (SELECT 1 FROM pg_locks"
    " WHERE locktype = 'advisory' AND granted AND pid = :pid AND objsubid = 1"
    " AND ((classid::bigint << 32) | objid::bigint) = :key)"
)


class HeldLock:
    """One holding of the lock: its backend's pid, and whether the holder still has it."""

    def __init__(self, conn: Connection, key: int, pid: int, lease_seconds: float) -> None:
        self.key = key
        self.pid = pid
        self._conn = conn
        self._lease = lease_seconds
        self._use = threading.Lock()  # the connection is used by the heartbeat and release
        self._stop = threading.Event()
        self.lost_reason: str | None = None
        self._thread = threading.Thread(
            target=self._beat, name="population-lock-heartbeat", daemon=True
        )
        self._thread.start()

    @property
    def beat_seconds(self) -> float:
        return self._lease / 4

    def check(self) -> None:
        """Raise when the lock is known to be lost: the run must not write any more."""
        if self.lost_reason is not None:
            raise PopulationLockLost(
                f"the population lock was lost ({self.lost_reason}); this run stopped writing"
            )

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_seconds):
            with self._use:
                if self._stop.is_set():
                    return
                try:
                    held = self._query(_HELD, {"pid": self.pid, "key": self.key})
                except DBAPIError as exc:
                    self._lose(f"its connection failed: {type(exc.orig).__name__}")
                    return
                if not held:
                    # Through a transaction pooler the statement may have run on another
                    # backend: the lock cannot be trusted either way.
                    self._lose("its session no longer holds it")
                    return

    def _query(self, statement: object, params: dict[str, object]) -> object:
        deadline = Deadline(self.beat_seconds)
        with deadline.watch(self._conn):
            return self._conn.execute(statement, params).scalar()  # type: ignore[call-overload]

    def _lose(self, reason: str) -> None:
        self.lost_reason = reason
        log.warning("population.lock_lost", extra={"reason": reason, "pid": self.pid})

    def release(self) -> None:
        self._stop.set()
        with self._use:
            try:
                if self.lost_reason is None:
                    # The lease ends with the lock (a store connection may go back to a pool).
                    self._query(
                        text(
                            "SELECT pg_advisory_unlock(:key),"
                            " set_config('idle_session_timeout', '0', false)"
                        ),
                        {"key": self.key},
                    )
                else:
                    self._conn.invalidate()
            except DBAPIError:
                # The session is gone, and its lock with it; never reuse a connection that
                # might still hold the lock.
                self._conn.invalidate()
            finally:
                self._conn.close()
        self._thread.join(timeout=self.beat_seconds + 1)


class PopulationLock:
    def __init__(self, direct_engine: Engine, key: int, lease_seconds: float) -> None:
        self.engine = direct_engine
        self.key = key
        self.lease_seconds = lease_seconds

    @contextmanager
    def hold(self) -> Iterator[HeldLock]:
        """Take the lock at once or raise PopulationRunning; hold it for the block."""
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            conn.execute(
                text("SELECT set_config('idle_session_timeout', :ms, false)"),
                {"ms": str(int(self.lease_seconds * 1000))},
            )
            got, pid = conn.execute(
                text("SELECT pg_try_advisory_lock(:key), pg_backend_pid()"), {"key": self.key}
            ).one()
            if got and conn.execute(text("SELECT pg_backend_pid()")).scalar() != pid:
                # Two statements of one session ran on two backends: a transaction pooler.
                conn.invalidate()
                raise ConfigError(
                    "DATABASE_DIRECT_URL goes through a transaction pooler: the population lock"
                    " needs a direct connection to PostgreSQL"
                )
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            raise PopulationRunning("another population is running; try again when it ends")
        held = HeldLock(conn, self.key, pid, self.lease_seconds)
        try:
            yield held
        finally:
            held.release()
