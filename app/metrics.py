"""Prometheus metrics, correct with several worker processes.

Counters and histograms live in prometheus-client's multiprocess files when
``PROMETHEUS_MULTIPROC_DIR`` is set (``callqueue serve`` sets it for its workers), and are summed
across processes at scrape time. Queue depth is not a process's opinion: it is read from the
database at scrape time, so every worker reports the same truth.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from app.models.queues import ENTRY_STATUSES
from app.queues.kinds import KINDS

# The *_created series double every counter's exposition for no alerting value.
disable_created_metrics()

# A configured but missing directory (a fresh container's tmpfs) is created rather than failing
# the first metric update; `callqueue serve` hands its workers a fresh one.
if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

CLAIMS = Counter(
    "callqueue_claims_total",
    "next-user requests by result: assigned, resumed, empty, exhausted, conflict, replica_error",
    ["queue_type", "source", "result"],
)
INVALID_ENTRIES = Counter(
    "callqueue_invalid_entries_total",
    "entries or leads skipped at claim time, by reason",
    ["queue_type", "reason"],
)
NEXT_USER_SECONDS = Histogram(
    "callqueue_next_user_seconds",
    "time to answer a next-user request",
    ["queue_type"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
POPULATIONS = Counter(
    "callqueue_populations_total",
    "queue populations by status",
    ["queue_type", "status", "dry_run"],
)
POPULATION_SECONDS = Histogram(
    "callqueue_population_duration_seconds",
    "time to populate one queue",
    ["queue_type"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
POPULATION_ROWS = Counter(
    "callqueue_population_rows_total",
    "rows handled by populations: eligible, invalid, populated, removed, kept_assigned",
    ["queue_type", "kind"],
)
LEASE_EXPIRIES = Counter(
    "callqueue_lease_expiries_total", "assignments whose lease ran out", ["queue_type"]
)
OUTCOMES = Counter("callqueue_outcomes_total", "call outcomes recorded", ["queue_type", "outcome"])
REPLICA_ERRORS = Counter(
    "callqueue_replica_errors_total", "failed replica reads by operation", ["operation"]
)
DISCOVERY_RUNS = Counter(
    "callqueue_discovery_runs_total", "discovery runs by status: succeeded, failed", ["status"]
)
INTAKE_ROWS = Counter(
    "callqueue_intake_rows_total",
    "score rows from upstream by source (discovery, api, csv) and result (created, updated,"
    " unchanged, reclassified, rejected)",
    ["source", "result"],
)
HTTP_REQUESTS = Counter(
    "callqueue_http_requests_total",
    "HTTP requests by route template and status",
    ["method", "route", "status"],
)
HTTP_SECONDS = Histogram(
    "callqueue_http_request_duration_seconds",
    "HTTP request duration by route template",
    ["method", "route"],
)


class QueueDepthCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterable[GaugeMetricFamily]:
        depth = GaugeMetricFamily(
            "callqueue_queue_entries",
            "entries in the current snapshot",
            labels=["queue_type", "status"],
        )
        up = GaugeMetricFamily("callqueue_database_up", "1 when the database answered the scrape")
        try:
            with self.engine.connect() as conn:
                for queue_type, kind in KINDS.items():
                    counts: dict[str, int] = dict(
                        conn.execute(
                            text(f"SELECT status, count(*) FROM {kind.table} GROUP BY status")
                        ).all()
                    )
                    for status in ENTRY_STATUSES:
                        depth.add_metric([str(queue_type), status], counts.get(status, 0))
            up.add_metric([], 1)
            yield depth
        except SQLAlchemyError:
            up.add_metric([], 0)
        yield up


def render(engine: Engine) -> tuple[bytes, str]:
    """The exposition: every process's counters (or this one's alone) plus queue depth."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    depth = CollectorRegistry()
    depth.register(QueueDepthCollector(engine))
    return generate_latest(registry) + generate_latest(depth), CONTENT_TYPE_LATEST
