"""The queues' fronts: where claims start looking for the first pending entry.

Every entry handed out leaves a dead row version in the claim-order index (pending entries in
serving order) until vacuum removes it, and vacuum cannot while any snapshot older than the
hand-out is open: a reporting query or a backup holding one for minutes would make every claim
step over every entry handed out since. Each queue has a front (``queue_fronts``), a position
no entry before which is pending except those put back after a hand-out (found through their
own small index), and claims look from there (``cq_claim``). Each server process moves the
fronts up every ``QUEUE_FRONT_SECONDS`` (``cq_advance_front``, which also starts from the front:
each round steps only over what was handed out since the last); a swap sets its queue's front
back to 0 in its own transaction. A front that is not moved up (the keeper off, or a process
stopped) costs only speed: claims then look from further back.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine, text

from app.logs import describe_error
from app.queues.kinds import KINDS

log = logging.getLogger(__name__)


def advance_fronts(engine: Engine) -> dict[str, int]:
    """Move every queue's front up to its first pending entry never handed out; the fronts."""
    fronts = {}
    for queue_type in KINDS:
        with engine.begin() as conn:
            fronts[str(queue_type)] = conn.execute(
                text("SELECT cq_advance_front(:q)"), {"q": str(queue_type)}
            ).scalar_one()
    return fronts


class FrontKeeper:
    """A thread of each server process that moves the fronts up every ``interval`` seconds."""

    def __init__(self, engine: Engine, interval_seconds: float) -> None:
        self.engine = engine
        self.interval = interval_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="queue-fronts", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                advance_fronts(self.engine)
            except Exception as exc:  # the database away for a moment: the next round tries
                log.warning("queue.front_failed", extra={"error": describe_error(exc)})
