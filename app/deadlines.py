"""Client-side deadlines on reads over psycopg.

A server-side ``statement_timeout`` bounds execution, not the link: a peer that stops carrying
bytes (a dead route, a stalled proxy, a vanished host) holds a reader for as long as TCP allows.
These deadlines shut the connection's socket down when they pass, so the read fails at once.
Used by the replica reader and by the population lock's heartbeat.
"""

from __future__ import annotations

import heapq
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from sqlalchemy import Connection


class _Watchdog:
    """One thread per process that enforces every replica read's client-side deadline.

    statement_timeout is enforced by the server: a link that swallows bytes (a dead route, a
    stalled proxy) or trickles them would hold the caller, and the queue entry it has locked,
    for as long as TCP allows. When a read's deadline passes, its connection's socket is shut
    down, so the read fails at once (and SQLAlchemy discards the connection).

    Registering a read is a heap push under a lock: a thread per read (``threading.Timer``) cost
    more CPU than the read itself on the claim path. Deadlines are ``now + constant``, so a new
    one is almost never the earliest and the thread is rarely woken.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Read]] = []
        self._seq = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, seconds: float, fd: int) -> _Read:
        # A duplicate descriptor of the socket: the read's own one may be closed (and its number
        # reused by another socket) before done() runs, when the driver drops a broken
        # connection; the duplicate keeps the number ours until done() closes it.
        read = _Read(os.dup(fd))
        with self._cond:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(
                    target=self._run, name="replica-deadlines", daemon=True
                )
                self._thread.start()
            entry = (time.monotonic() + seconds, next(self._seq), read)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:
                self._cond.notify()
        return read

    def done(self, read: _Read) -> None:
        with self._cond:
            read.done = True  # left in the heap; dropped when it comes up
            os.close(read.fd)

    def _run(self) -> None:
        with self._cond:
            while True:
                while self._heap and self._heap[0][2].done:
                    heapq.heappop(self._heap)
                if not self._heap:
                    self._cond.wait()
                    continue
                delay = self._heap[0][0] - time.monotonic()
                if delay > 0:
                    self._cond.wait(delay)
                    continue
                _, _, read = heapq.heappop(self._heap)
                read.fired = True
                # shutdown() acts on the socket, whichever descriptor names it; detach() leaves
                # the descriptor to done() to close.
                try:
                    sock = socket.socket(fileno=read.fd)
                except OSError:
                    continue  # not a socket any more: nothing to cut
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                finally:
                    sock.detach()


@dataclass(slots=True)
class _Read:
    fd: int
    done: bool = False
    fired: bool = False


_WATCHDOG = _Watchdog()


def _after_fork_in_child() -> None:
    """A forked child starts with no thread and maybe a held lock: give it a watchdog of its
    own, so it never fires the parent's deadlines on inherited sockets."""
    global _WATCHDOG
    _WATCHDOG = _Watchdog()


os.register_at_fork(after_in_child=_after_fork_in_child)


class Deadline:
    """A client-side bound on one read over psycopg (see _Watchdog)."""

    def __init__(self, seconds: float | None) -> None:
        self.seconds = seconds
        self._read: _Read | None = None

    @property
    def fired(self) -> bool:
        return self._read is not None and self._read.fired

    @contextmanager
    def watch(self, conn: Connection) -> Iterator[None]:
        pgconn = getattr(conn.connection.driver_connection, "pgconn", None)
        if self.seconds is None or pgconn is None:
            yield  # MySQL: pymysql's read_timeout already bounds every read client-side
            return
        self._read = _WATCHDOG.watch(self.seconds, pgconn.socket)
        try:
            yield
        finally:
            _WATCHDOG.done(self._read)
