"""The background sender every server process runs (SPEC 8.4), whether or not it runs the
scheduler: about once a second it dispatches new events, sends what is due and records it; every
half minute it also looks for callbacks that became overdue. Processes share the work through
the database (SKIP LOCKED leases), never by talking to each other."""

from __future__ import annotations

import logging
import threading
import time

from app.logs import describe_error
from app.webhooks.delivery import SEND_BATCH, Deliverer

log = logging.getLogger(__name__)

IDLE_SECONDS = 1.0
OVERDUE_EVERY_SECONDS = 30.0


class WebhookSender:
    def __init__(self, deliverer: Deliverer) -> None:
        self.deliverer = deliverer
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="callqueue-webhooks", daemon=True)
        self._overdue_at = 0.0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                self.deliverer.dispatch()
                if time.monotonic() >= self._overdue_at:
                    self.deliverer.report_overdue()
                    self._overdue_at = time.monotonic() + OVERDUE_EVERY_SECONDS
                busy = self.deliverer.deliver_due() == SEND_BATCH
            except Exception as exc:  # the database away for a moment: the next round tries again
                log.warning("webhook.sender_failed", extra={"error": describe_error(exc)})
            if not busy:
                self._stop.wait(IDLE_SECONDS)
