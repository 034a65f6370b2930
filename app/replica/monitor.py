"""The replica's state as the probes report it: last seen by a background check (SPEC 4.3).

A probe that pinged the replica inline waited as long as the replica made it: with the replica
blackholed, about five seconds (the connect timeout), longer than a load balancer's probe
timeout, so every instance was pulled out by exactly the outage that must not pull them out.
Each process keeps one thread that checks the replica every ``REPLICA_CHECK_SECONDS``; the
probes read its last result and never wait on the replica themselves.
"""

from __future__ import annotations

import logging
import threading
import time

from app.replica.reader import Replica

log = logging.getLogger(__name__)

# How long a probe waits for the first check after start-up (a healthy replica answers in
# milliseconds; one that does not is reported "error" until it does).
FIRST_CHECK_WAIT_SECONDS = 0.5


class ReplicaMonitor:
    def __init__(self, replica: Replica, interval_seconds: float, stale_after_seconds: float):
        self.replica = replica
        self.interval = interval_seconds
        # A check still running after this long counts as a failure: a healthy replica answers
        # a SELECT 1 in milliseconds, and the check itself may take up to the connect timeout.
        self.stale_after = stale_after_seconds
        self._ok: bool | None = None
        self._running_since: float | None = None
        self._first = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="replica-monitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            # The check in flight is bounded by the replica's deadlines; don't wait for it.
            self._thread.join(timeout=1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.check()
            self._stop.wait(self.interval)

    def check(self) -> bool:
        self._running_since = time.monotonic()
        ok = self.replica.ping()
        self._running_since = None
        if ok != self._ok and (self._ok is not None or not ok):
            log.info("replica.state_changed", extra={"replica": "ok" if ok else "error"})
        self._ok = ok
        self._first.set()
        return ok

    @property
    def ok(self) -> bool:
        """The replica answered its last check, and the check in flight (if any) is not
        overdue. Waits briefly for the very first check only."""
        if not self._first.is_set():
            self._first.wait(FIRST_CHECK_WAIT_SECONDS)
        since = self._running_since
        if since is not None and time.monotonic() - since > self.stale_after:
            return False
        return bool(self._ok)

    @property
    def state(self) -> str:
        return "ok" if self.ok else "error"
