"""The population's run history (SPEC 4.1: ``last_run``, ``GET /api/population-runs``): each run,
and each of its queues' figures, written as they happen so a crash leaves a trace."""

from __future__ import annotations

import uuid
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, text

from app.vocabulary import QueueType


@dataclass(slots=True)
class QueueReport:
    status: str = "skipped"
    eligible: int = 0
    invalid: int = 0
    populated: int = 0
    removed: int = 0
    kept_assigned: int = 0
    duration_ms: int = 0
    error: str | None = None


@dataclass(slots=True)
class RunReport:
    run_id: uuid.UUID
    started_at: datetime
    finished_at: datetime
    duration_ms: int
    next_run_at: datetime
    queues: dict[QueueType, QueueReport] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        return all(q.status != "failed" for q in self.queues.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "run_id": str(self.run_id),
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat(),
            "duration_ms": self.duration_ms,
            "next_run_at": self.next_run_at.isoformat(),
            "queues": {str(t): asdict(self.queues[t]) for t in QueueType},
        }


def start_run(
    engine: Engine, trigger: str, queue: QueueType | None, dry_run: bool
) -> tuple[uuid.UUID, datetime]:
    """Record a run as started. The caller holds the population lock, so any run still marked
    running died with its process: it is marked failed, interrupted."""
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE population_runs SET status = 'failed', finished_at = now(),"
                " error = 'interrupted: the process running it stopped before it finished'"
                " WHERE status = 'running'"
            )
        )
        row = conn.execute(
            text(
                "INSERT INTO population_runs (trigger, dry_run, queue_filter)"
                " VALUES (:trigger, :dry_run, :queue) RETURNING id, started_at"
            ),
            {"trigger": trigger, "dry_run": dry_run, "queue": queue and str(queue)},
        ).one()
    return row.id, row.started_at


def finish_run(
    engine: Engine,
    run_id: uuid.UUID,
    reports: dict[QueueType, QueueReport],
    duration_ms: int,
    run_error: str | None,
) -> datetime:
    """Record how the run ended; returns when (a run another process already marked
    interrupted keeps that mark)."""
    failed = [f"{t}: {r.error}" for t, r in reports.items() if r.status == "failed"]
    errors = [*failed, *([run_error] if run_error else [])]
    with engine.begin() as conn:
        finished: datetime | None = conn.execute(
            text(
                "UPDATE population_runs SET status = :status, finished_at = now(),"
                " duration_ms = :duration_ms, error = :error"
                " WHERE id = :id AND status = 'running'"
                " RETURNING finished_at"
            ),
            {
                "id": run_id,
                "status": "failed" if failed else "succeeded",
                "duration_ms": duration_ms,
                "error": "; ".join(errors) or None,
            },
        ).scalar()
        if finished is None:
            finished = conn.execute(text("SELECT now()")).scalar_one()
        return finished


def record_queue(
    engine: Engine,
    run_id: uuid.UUID,
    queue_type: QueueType,
    report: QueueReport,
    dry_run: bool,
    started_at: datetime,
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                """
                INSERT INTO population_run_queues
                    (run_id, queue_type, status, dry_run, eligible, invalid, populated,
                     removed, kept_assigned, duration_ms, error, started_at, finished_at)
                VALUES (:run_id, :queue_type, :status, :dry_run, :eligible, :invalid,
                        :populated, :removed, :kept_assigned, :duration_ms, :error,
                        :started_at, now())
                """
            ),
            {
                "run_id": run_id,
                "queue_type": str(queue_type),
                "dry_run": dry_run,
                "started_at": started_at,
                **asdict(report),
            },
        )
