"""Single-flight for long runs (population, discovery): a PostgreSQL session advisory lock held on
a connection of its own for the whole run.

A session lock, not a transaction lock, because a run commits many short transactions; a
connection of its own, because the run's work uses pooled connections that come and go. If that
connection dies, the lock goes with it and another process may start a run: every write of the
holder checks first that the lock is still its own (``lock_held``), so two runs never write at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

_HELD = text(
    "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND pid = :pid AND objsubid = 1"
    " AND ((classid::bigint << 32) | objid::bigint) = :key)"
)


@contextmanager
def session_lock(engine: Engine, key: int) -> Iterator[int | None]:
    """Try the lock once, never wait: yields the holding backend's pid, or None when another
    session holds it (the caller refuses the run). Released on the way out; a connection that
    failed to release it is discarded, never pooled with the lock still held."""
    conn = engine.connect()
    try:
        got, pid = conn.execute(
            text("SELECT pg_try_advisory_lock(:key), pg_backend_pid()"), {"key": key}
        ).one()
        conn.commit()
        if not got:
            yield None
            return
        try:
            yield int(pid)
        finally:
            try:
                conn.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
                conn.commit()
            except DBAPIError:
                conn.invalidate()
    finally:
        conn.close()


def lock_held(conn: Connection, pid: int | None, key: int) -> bool:
    """Whether the backend ``pid`` still holds the session lock ``key``."""
    return bool(conn.execute(_HELD, {"pid": pid, "key": key}).scalar())
