"""The background sender every server process runs (SPEC 8.4), whether or not it runs the
scheduler: about once a second it dispatches new events, sends what is due and records it; every
half minute it also looks for callbacks that became overdue. Processes share the work through
the database (SKIP LOCKED leases), never by talking to each other.

The loop runs in a child process of the server process, not in a thread of it: signing, HTTP
and recording are Python work, and in a thread they would take the interpreter's lock from the
agents' requests (each waiting up to a switch interval every time it wakes from I/O: the claims'
p99 at 50 cycles/s went from about 8 ms to 40 with every event subscribed). The child has its
own small connection pool, stops when the server process stops (or dies), and ignores Ctrl-C
(the server process stops it).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from multiprocessing.synchronize import Event

from app.config import Settings
from app.logs import configure_logging, describe_error
from app.webhooks.delivery import SEND_BATCH, Deliverer

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
OVERDUE_EVERY_SECONDS = 30.0
# Store connections the sender needs: one at a time for its statements, one for a test event's.
POOL_SIZE = 2
# The sender's CPU priority below the server's (Unix nice: 0 normal, 19 lowest).
NICENESS = 10


class WebhookSender:
    """Starts and stops this server process's sender (``run_sender`` in a child process)."""

    def __init__(self, settings: Settings) -> None:
        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._process = context.Process(
            target=run_sender,
            args=(settings, self._stop, os.getpid()),
            name="callqueue-webhooks",
            daemon=True,
        )

    def start(self) -> None:
        self._process.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._process.join(timeout)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(5)


def run_sender(settings: Settings, stop: Event, parent: int) -> None:
    """The child's loop, until ``stop`` is set or the server process is gone."""
    from app.db import create_store_engine

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    # The agents come first: when the CPUs are busy, events wait (they are late, never lost).
    os.nice(NICENESS)
    configure_logging(settings.log_level, json_lines=settings.app_env == "production")
    engine = create_store_engine(settings, pool_size=POOL_SIZE)
    deliverer = Deliverer.for_settings(engine, settings)
    overdue_at = 0.0
    try:
        while not stop.is_set() and os.getppid() == parent:
            busy = False
            try:
                deliverer.dispatch()
                if time.monotonic() >= overdue_at:
                    deliverer.report_overdue()
                    overdue_at = time.monotonic() + OVERDUE_EVERY_SECONDS
                busy = deliverer.deliver_due() == SEND_BATCH
            except Exception as exc:  # the database away for a moment: the next round tries again
                log.warning("webhook.sender_failed", extra={"error": describe_error(exc)})
            if not busy:
                stop.wait(IDLE_SECONDS)
    finally:
        deliverer.close()
        engine.dispose()
