"""What supervisors read: live statistics, queue listings and the population history.

Every figure comes from the database (the ledger, the queue tables, the invalidation record), so
all processes agree and nothing is estimated.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, text

from app.queues.callbacks import callback_counts
from app.queues.kinds import KINDS
from app.timestamps import iso
from app.vocabulary import QueueType


def queue_stats(
    conn: Connection, window_minutes: int, callback_grace_minutes: int
) -> dict[str, Any]:
    now = conn.execute(text("SELECT now()")).scalar_one()
    window = {"w": window_minutes}
    stats: dict[str, dict[str, Any]] = {}
    for queue_type, kind in KINDS.items():
        live = conn.execute(
            text(
                f"SELECT count(*) FILTER (WHERE status = 'pending') AS pending,"
                f" count(*) FILTER (WHERE status = 'assigned') AS assigned,"
                f" extract(epoch FROM now() - min(available_from)"
                f"   FILTER (WHERE status = 'pending')) AS oldest_pending"
                f" FROM {kind.table}"
            )
        ).one()
        stats[str(queue_type)] = {
            "pending": live.pending,
            "assigned": live.assigned,
            "oldest_pending_age_seconds": _seconds(live.oldest_pending),
            "longest_assignment_seconds": None,
            "last_population": None,
            "window": {
                "claims": 0,
                "completions": {},
                "releases": 0,
                "lease_expiries": 0,
                "invalid": {},
                "next_user_ms": {"p50": None, "p95": None},
            },
        }
    for row in conn.execute(
        text(
            "SELECT queue_type, extract(epoch FROM now() - min(assigned_at)) AS longest"
            " FROM assignments WHERE status = 'active' AND lease_expires_at > now()"
            " GROUP BY queue_type"
        )
    ):
        stats[row.queue_type]["longest_assignment_seconds"] = _seconds(row.longest)
    for row in conn.execute(
        text(
            "SELECT DISTINCT ON (q.queue_type) q.queue_type, q.run_id, q.status, q.finished_at,"
            " q.eligible, q.invalid, q.populated, q.removed, q.kept_assigned, q.duration_ms,"
            " q.error FROM population_run_queues q"
            " WHERE NOT q.dry_run AND q.status <> 'skipped'"
            " ORDER BY q.queue_type, q.finished_at DESC"
        )
    ):
        stats[row.queue_type]["last_population"] = {
            "run_id": str(row.run_id),
            "status": row.status,
            "finished_at": iso(row.finished_at),
            "eligible": row.eligible,
            "invalid": row.invalid,
            "populated": row.populated,
            "removed": row.removed,
            "kept_assigned": row.kept_assigned,
            "duration_ms": row.duration_ms,
            "error": row.error,
        }
    for row in conn.execute(
        text(
            "SELECT queue_type, count(*) AS claims,"
            " percentile_cont(0.5) WITHIN GROUP (ORDER BY claim_ms) AS p50,"
            " percentile_cont(0.95) WITHIN GROUP (ORDER BY claim_ms) AS p95"
            " FROM assignments WHERE assigned_at > now() - make_interval(mins => :w)"
            " GROUP BY queue_type"
        ),
        window,
    ):
        w = stats[row.queue_type]["window"]
        w["claims"] = row.claims
        w["next_user_ms"] = {"p50": _ms(row.p50), "p95": _ms(row.p95)}
    for row in conn.execute(
        text(
            "SELECT queue_type, status, outcome, count(*) AS n FROM assignments"
            " WHERE status IN ('completed', 'released', 'expired')"
            " AND finished_at > now() - make_interval(mins => :w)"
            " GROUP BY queue_type, status, outcome"
        ),
        window,
    ):
        w = stats[row.queue_type]["window"]
        if row.status == "completed":
            w["completions"][row.outcome] = row.n
        elif row.status == "released":
            w["releases"] += row.n
        else:
            w["lease_expiries"] += row.n
    for row in conn.execute(
        text(
            "SELECT queue_type, reason, count(*) AS n FROM entry_invalidations"
            " WHERE created_at > now() - make_interval(mins => :w) GROUP BY queue_type, reason"
        ),
        window,
    ):
        stats[row.queue_type]["window"]["invalid"][row.reason] = row.n
    # Callbacks (SPEC 7.2): waiting, due, overdue now; handed out late within the window.
    callbacks = callback_counts(conn, callback_grace_minutes, window_minutes)
    for name, counts in callbacks.items():
        stats[name]["callbacks"] = counts
    return {"generated_at": iso(now), "window_minutes": window_minutes, "queues": stats}


def _seconds(value: Any) -> int | None:
    return None if value is None else int(value)


def _ms(value: Any) -> float | None:
    return None if value is None else round(float(value), 1)


def list_entries(
    conn: Connection, queue_type: QueueType, status: str | None, *, limit: int, offset: int
) -> dict[str, Any]:
    """A page of the current snapshot in serving order; no contact details."""
    kind = KINDS[queue_type]
    where = "WHERE status = :status" if status else ""
    params = {"status": status, "limit": limit, "offset": offset}
    total = conn.execute(text(f"SELECT count(*) FROM {kind.table} {where}"), params).scalar_one()
    rows = conn.execute(
        text(
            f"SELECT * FROM {kind.table} {where}"
            " ORDER BY queue_position, id LIMIT :limit OFFSET :offset"
        ),
        params,
    ).mappings()
    items = []
    for row in rows:
        item = dict(row)
        item["id"] = str(item["id"])
        for key, value in item.items():
            if isinstance(value, datetime):
                item[key] = value.isoformat()
        items.append(item)
    return {"items": items, "limit": limit, "offset": offset, "total": total}


def list_runs(conn: Connection, *, limit: int, offset: int) -> dict[str, Any]:
    total = conn.execute(text("SELECT count(*) FROM population_runs")).scalar_one()
    runs = conn.execute(
        text(
            "SELECT id, trigger, dry_run, queue_filter, status, started_at, finished_at,"
            " duration_ms, error FROM population_runs"
            " ORDER BY started_at DESC, id LIMIT :limit OFFSET :offset"
        ),
        {"limit": limit, "offset": offset},
    ).all()
    per_queue: dict[Any, dict[str, Any]] = defaultdict(dict)
    if runs:
        for q in conn.execute(
            text(
                "SELECT run_id, queue_type, status, eligible, invalid, populated, removed,"
                " kept_assigned, duration_ms, error FROM population_run_queues"
                " WHERE run_id = ANY(:ids)"
            ),
            {"ids": [r.id for r in runs]},
        ).mappings():
            per_queue[q["run_id"]][q["queue_type"]] = {
                k: v for k, v in q.items() if k not in ("run_id", "queue_type")
            }
    items = [
        {
            "run_id": str(r.id),
            "trigger": r.trigger,
            "dry_run": r.dry_run,
            "queue": r.queue_filter,
            "status": r.status,
            "started_at": iso(r.started_at),
            "finished_at": iso(r.finished_at),
            "duration_ms": r.duration_ms,
            "error": r.error,
            "queues": per_queue.get(r.id, {}),
        }
        for r in runs
    ]
    return {"items": items, "limit": limit, "offset": offset, "total": total}


ACTIVITY_MAX_HOURS = 168


def activity_by_hour(conn: Connection, hours: int) -> dict[str, Any]:
    """Hand-outs and how assignments ended, per whole UTC hour, oldest first, the current
    (partial) hour last, zeros included, so a chart needs no gap filling.

    UTC rather than the calling time zone: an hour is then always sixty minutes long and
    contiguous (no daylight-saving hour counted twice or missing), and the page labels each
    bucket in the reader's own time zone. Two range scans on indexed columns (``assigned_at``,
    ``finished_at``); the window is bounded by ``ACTIVITY_MAX_HOURS``.
    """
    first, now = conn.execute(
        text("SELECT date_trunc('hour', now(), 'UTC') - make_interval(hours => :h - 1), now()"),
        {"h": hours},
    ).one()
    buckets: dict[datetime, dict[str, Any]] = {}
    for i in range(hours):
        start = first + timedelta(hours=i)
        buckets[start] = {
            "hour_start": start,
            "handed_out": 0,
            "sources": {},
            "outcomes": {},
            "completed": 0,
            "released": 0,
            "expired": 0,
        }
    for row in conn.execute(
        text(
            "SELECT date_trunc('hour', assigned_at, 'UTC') AS hour, source, count(*) AS n"
            " FROM assignments WHERE assigned_at >= :first GROUP BY 1, 2"
        ),
        {"first": first},
    ):
        bucket = buckets.get(row.hour)
        if bucket is not None:  # a row assigned after now() (clock moved) has no bucket
            bucket["handed_out"] += row.n
            bucket["sources"][row.source] = row.n
    for row in conn.execute(
        text(
            "SELECT date_trunc('hour', finished_at, 'UTC') AS hour, status, outcome,"
            " count(*) AS n FROM assignments"
            " WHERE finished_at >= :first AND status IN ('completed', 'released', 'expired')"
            " GROUP BY 1, 2, 3"
        ),
        {"first": first},
    ):
        bucket = buckets.get(row.hour)
        if bucket is None:
            continue
        if row.status == "completed":
            bucket["completed"] += row.n
            bucket["outcomes"][row.outcome] = row.n
        else:
            bucket[row.status] += row.n
    return {
        "generated_at": iso(now),
        "hours": hours,
        "timezone": "UTC",
        "buckets": [{**b, "hour_start": iso(b["hour_start"])} for b in buckets.values()],
    }
