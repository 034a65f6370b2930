"""Readiness and the scheduler-facing health report (SPEC 4.1, 4.3)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any

from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
from app.flags import Flags
from app.queues.callbacks import LATE_WINDOW_MINUTES, callback_counts
from app.queues.kinds import KINDS
from app.replica.monitor import ReplicaMonitor
from app.rules.suppression import KEY_MISMATCHED
from app.timestamps import iso
from app.vocabulary import QueueType
from app.webhooks.endpoints import problems as webhook_problems

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["configure_logging"] = False
    if database_url:
        config.attributes["database_url"] = database_url
    return config


@lru_cache
def schema_head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def readiness(
    engine: Engine, replica: ReplicaMonitor, key_state: Callable[[Connection], str]
) -> dict[str, str]:
    """The replica's state is the background check's, never waited for. ``key_state``: whether
    this process's SUPPRESSION_KEY is the do-not-call list's (app.rules.suppression); a process
    with another key is not ready (SPEC 8.1), since it would hand nobody out."""
    database, schema, key = "error", "unknown", "unknown"
    try:
        with engine.connect() as conn:
            database = "ok"
            has_table = conn.execute(
                text("SELECT to_regclass('alembic_version') IS NOT NULL")
            ).scalar()
            version = (
                conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
                if has_table
                else None
            )
            schema = "current" if version == schema_head() else "behind"
            if schema == "current":
                key = key_state(conn)
    except SQLAlchemyError:  # including a pooled session without its bounds (app.db)
        pass
    ready = database == "ok" and schema == "current" and key != KEY_MISMATCHED
    return {
        "status": "ready" if ready else "not_ready",
        "database": database,
        "schema": schema,
        "replica": replica.state,
        "suppression_key": key,
    }


def health_report(
    engine: Engine, replica: ReplicaMonitor, settings: Settings, flags: Flags
) -> dict[str, Any]:
    issues: list[str] = []
    level = 0  # 0 healthy, 1 degraded, 2 unhealthy

    def problem(severity: int, message: str) -> None:
        nonlocal level
        level = max(level, severity)
        issues.append(message)

    replica_ok = replica.ok
    if not replica_ok:
        problem(1, "the claims replica is unreachable")
    queues: dict[str, Any] = {}
    last_run: dict[str, Any] | None = None
    checked_at: datetime | None = None
    try:
        with engine.connect() as conn:
            checked_at = conn.execute(text("SELECT now()")).scalar_one()
            for queue_type, kind in KINDS.items():
                queues[str(queue_type)] = _queue_health(conn, kind.table, str(queue_type))
            callbacks = callback_counts(conn, settings.callback_grace_minutes, LATE_WINDOW_MINUTES)
            for name, counts in callbacks.items():
                queues[name]["callbacks"] = counts
                # A promise about to be broken, whatever the flags (callbacks are served in
                # every mode).
                if counts["overdue"]:
                    problem(
                        1,
                        f"{counts['overdue']} callbacks of {name} are overdue (not handed out"
                        f" {settings.callback_grace_minutes} minutes after they were due)",
                    )
            for message in webhook_problems(conn):
                problem(1, message)
            last_run = _last_run(conn)
            if flags.USE_SEPARATED_QUEUES:
                _population_problems(conn, settings, checked_at, problem)
                for name, q in queues.items():
                    if q["pending"] < settings.queue_low_watermark:
                        problem(
                            1,
                            f"{name} has {q['pending']} pending entries, below the low watermark"
                            f" of {settings.queue_low_watermark}",
                        )
        database = "ok"
    except SQLAlchemyError:
        database = "error"
        problem(2, "the database is unreachable")
        queues = {str(t): None for t in QueueType}
    return {
        "status": ("healthy", "degraded", "unhealthy")[level],
        "checked_at": iso(checked_at or datetime.now(UTC)),
        "issues": issues,
        "database": database,
        "replica": "ok" if replica_ok else "error",
        "flags": {**flags.as_dict(), "serving_mode": flags.serving_mode},
        "queues": queues,
        "last_run": last_run,
    }


def _queue_health(conn: Any, table: str, queue_type: str) -> dict[str, Any]:
    row = conn.execute(
        text(
            f"SELECT count(*) FILTER (WHERE status = 'pending') AS pending,"
            f" count(*) FILTER (WHERE status = 'assigned') AS assigned, count(*) AS total,"
            f" min(available_from) FILTER (WHERE status = 'pending') AS oldest FROM {table}"
        )
    ).one()
    last = conn.execute(
        text(
            "SELECT max(finished_at) FROM population_run_queues"
            " WHERE queue_type = :q AND status = 'succeeded' AND NOT dry_run"
        ),
        {"q": queue_type},
    ).scalar()
    return {
        "pending": row.pending,
        "assigned": row.assigned,
        "total": row.total,
        "oldest_pending_at": iso(row.oldest),
        "last_populated_at": iso(last),
    }


def _last_run(conn: Any) -> dict[str, Any] | None:
    row = conn.execute(
        text(
            "SELECT id, trigger, status, started_at, finished_at, duration_ms, error"
            " FROM population_runs WHERE NOT dry_run ORDER BY started_at DESC LIMIT 1"
        )
    ).one_or_none()
    if row is None:
        return None
    return {
        "run_id": str(row.id),
        "trigger": row.trigger,
        "status": row.status,
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "duration_ms": row.duration_ms,
        "error": row.error,
    }


def _population_problems(conn: Any, settings: Settings, now: datetime, problem: Any) -> None:
    window = timedelta(minutes=2 * settings.population_interval_minutes)
    for queue_type in QueueType:
        rows = conn.execute(
            text(
                "SELECT status, finished_at, error FROM population_run_queues"
                " WHERE queue_type = :q AND NOT dry_run AND status <> 'skipped'"
                " ORDER BY finished_at DESC LIMIT 1"
            ),
            {"q": str(queue_type)},
        ).one_or_none()
        last_ok = conn.execute(
            text(
                "SELECT max(finished_at) FROM population_run_queues"
                " WHERE queue_type = :q AND NOT dry_run AND status = 'succeeded'"
            ),
            {"q": str(queue_type)},
        ).scalar()
        if rows is not None and rows.status == "failed":
            problem(2, f"the last population of {queue_type} failed: {rows.error}")
        if last_ok is None:
            problem(2, f"{queue_type} has never been populated")
        elif now - last_ok > window:
            problem(
                2,
                f"{queue_type} has not been populated successfully since {last_ok.isoformat()}"
                f" (more than twice the {settings.population_interval_minutes}-minute schedule)",
            )
