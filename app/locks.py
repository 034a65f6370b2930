"""Single flight for long runs (the population, discovery): a session advisory lock on a
connection of its own, held as a lease.

A session lock, not a transaction lock, because a run commits many short transactions; a
connection of its own, because the run's work uses pooled connections that come and go.

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
(``HeldLock.check``); and every write of a run asks the server too (``HeldLock.assert_held``),
so two runs never write at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from app.deadlines import Deadline
from app.errors import CallqueueError, ConfigError

log = logging.getLogger(__name__)

_HELD = text(
    "SELECT pg_backend_pid() = :pid AND EXISTS (SELECT 1 FROM pg_locks"
    " WHERE locktype = 'advisory' AND granted AND pid = :pid AND objsubid = 1"
    " AND ((classid::bigint << 32) | objid::bigint) = :key)"
)


class HeldLock:
    """One holding of the lock: its backend's pid, and whether the holder still has it."""

    def __init__(
        self,
        conn: Connection,
        key: int,
        pid: int,
        lease_seconds: float,
        name: str,
        lost: type[CallqueueError],
    ) -> None:
        self.key = key
        self.pid = pid
        self.name = name
        self._lost = lost
        self._conn = conn
        self._lease = lease_seconds
        self._use = threading.Lock()  # the connection is used by the heartbeat and release
        self._stop = threading.Event()
        self.lost_reason: str | None = None
        self._thread = threading.Thread(
            target=self._beat, name=f"{name}-lock-heartbeat", daemon=True
        )
        self._thread.start()

    @property
    def beat_seconds(self) -> float:
        return self._lease / 4

    def check(self) -> None:
        """Raise when the lock is known to be lost: the run must not write any more."""
        if self.lost_reason is not None:
            raise self._lost(
                f"the {self.name} lock was lost ({self.lost_reason}); this run stopped writing"
            )

    def assert_held(self, conn: Connection) -> None:
        """Before any write of the run, on the connection about to write: known lost (the
        heartbeat), or no longer held by its backend as the server sees it (the heartbeat may
        not have noticed yet)."""
        self.check()
        still = conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
                " AND pid = :pid AND objsubid = 1"
                " AND ((classid::bigint << 32) | objid::bigint) = :key)"
            ),
            {"pid": self.pid, "key": self.key},
        ).scalar()
        if not still:
            raise self._lost(
                f"the {self.name} lock was lost (its database connection ended); this run"
                " stopped writing"
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
        log.warning("run_lock.lost", extra={"lock": self.name, "reason": reason, "pid": self.pid})

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


class RunLock:
    """A run's single flight: ``busy`` is raised when another session holds the lock (the
    caller answers 409 / exit 75), ``lost`` when the holding is lost mid-run."""

    def __init__(
        self,
        direct_engine: Engine,
        key: int,
        lease_seconds: float,
        *,
        name: str,
        busy: type[CallqueueError],
        lost: type[CallqueueError],
    ) -> None:
        self.engine = direct_engine
        self.key = key
        self.lease_seconds = lease_seconds
        self.name = name
        self._busy = busy
        self._lost = lost

    @contextmanager
    def hold(self) -> Iterator[HeldLock]:
        """Take the lock at once or raise ``busy``; hold it for the block."""
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
                    f"DATABASE_DIRECT_URL goes through a transaction pooler: the {self.name}"
                    " lock needs a direct connection to PostgreSQL"
                )
        except BaseException:
            conn.close()
            raise
        if not got:
            conn.close()
            raise self._busy(f"another {self.name} is running; try again when it ends")
        held = HeldLock(conn, self.key, pid, self.lease_seconds, self.name, self._lost)
        try:
            yield held
        finally:
            held.release()
