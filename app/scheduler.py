"""The built-in scheduler: discovery every DISCOVERY_INTERVAL_MINUTES, hourly population,
queue-level check every 5 minutes, lease sweep every minute, retention daily, for deployments
with no external cron.

Every process may run it. Each job runs once per tick across all of them: a tick is the database
clock floored to the job's period, and the process whose INSERT of (job, tick) succeeds runs it.
A process that starts mid-period claims the current tick if nobody has, so a fresh deployment
populates at once instead of at the top of the next hour.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from app.errors import DiscoveryRunning, PopulationRunning
from app.privacy.retention import Retention
from app.queues.leases import sweep_expired_leases
from app.services import Services

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0
TICK_RETENTION_DAYS = 7
RETENTION_BUDGET_SECONDS = 300.0


@dataclass(frozen=True)
class Job:
    name: str
    period_seconds: int
    run: Callable[[], str]


def jobs(services: Services) -> list[Job]:
    s = services.settings

    def discovery() -> str:
        report = services.discovery().run(trigger="scheduler")
        return f"created {report.created}" if report.success else "failed"

    def population() -> str:
        report = services.population().run(trigger="scheduler")
        return "succeeded" if report.success else "failed"

    def queue_level_check() -> str:
        body = services.population().replenish(
            watermark=s.queue_low_watermark,
            min_interval_minutes=s.replenish_min_interval_minutes,
            trigger="scheduler-queue-level-check",
        )
        acted = [q for q, d in body["queues"].items() if d["action"] == "populate"]
        return f"refilled {', '.join(acted)}" if acted else "nothing to do"

    def lease_sweep() -> str:
        with services.engine.begin() as conn:
            expired = sweep_expired_leases(conn)
            conn.execute(
                text("DELETE FROM scheduler_ticks WHERE tick < now() - make_interval(days => :d)"),
                {"d": TICK_RETENTION_DAYS},
            )
        return f"expired {expired}"

    def retention() -> str:
        # Bounded, so a first run on years of ledger does not hold the other jobs up: the next
        # day's run goes on where this one stopped (or run `callqueue retention run` once).
        report = Retention(services.engine, s, budget_seconds=RETENTION_BUDGET_SECONDS).run()
        deleted = sum(report.deleted.values())
        more = ", more tomorrow" if report.stopped_early else ""
        return f"notes cleared {report.notes_cleared}, rows deleted {deleted}{more}"

    # Discovery first: at start-up, leads arrive before the queues are built from them.
    return [
        Job("discovery", s.discovery_interval_minutes * 60, discovery),
        Job("population", s.population_interval_minutes * 60, population),
        Job("queue_level_check", 300, queue_level_check),
        Job("lease_sweep", 60, lease_sweep),
        Job("retention", 86_400, retention),
    ]


class Scheduler:
    def __init__(self, services: Services, job_list: list[Job] | None = None) -> None:
        self.services = services
        self.jobs = job_list if job_list is not None else jobs(services)
        self.owner = f"{socket.gethostname()}:{os.getpid()}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="callqueue-scheduler", daemon=True)

    def start(self) -> None:
        log.info("scheduler.started", extra={"owner": self.owner})
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except SQLAlchemyError:
                log.warning("scheduler.database_unavailable", exc_info=True)
            self._stop.wait(POLL_SECONDS)

    def tick(self) -> list[str]:
        """Run every job whose current tick this process wins; returns their names."""
        ran = []
        for job in self.jobs:
            tick = self._claim(job)
            if tick is None:
                continue
            ran.append(job.name)
            try:
                result = job.run()
            except PopulationRunning:
                result = "skipped: a population was already running"
            except DiscoveryRunning:
                result = "skipped: a discovery was already running"
            except Exception as exc:
                log.exception("scheduler.job_failed", extra={"job": job.name})
                result = f"error: {type(exc).__name__}"
            with self.services.engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE scheduler_ticks SET finished_at = now(), result = :r"
                        " WHERE job = :j AND tick = :t"
                    ),
                    {"r": result, "j": job.name, "t": tick},
                )
            log.info("scheduler.job_done", extra={"job": job.name, "result": result})
        return ran

    def _claim(self, job: Job) -> datetime | None:
        with self.services.engine.begin() as conn:
            tick: datetime | None = conn.execute(
                text(
                    "INSERT INTO scheduler_ticks (job, tick, owner)"
                    " VALUES (:j, to_timestamp(floor(extract(epoch FROM now()) / :p) * :p), :o)"
                    " ON CONFLICT DO NOTHING RETURNING tick"
                ),
                {"j": job.name, "p": job.period_seconds, "o": self.owner},
            ).scalar()
        return tick
