"""Prometheus metrics, correct with several worker processes.

Counters and histograms live in prometheus-client's multiprocess files when
``PROMETHEUS_MULTIPROC_DIR`` is set (``callqueue serve`` sets it for its workers), and are summed
across processes at scrape time. Queue depth is not a process's opinion: it is read from the
database at scrape time, so every worker reports the same truth.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator

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
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from app.config import Settings
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
SUPPRESSION_CHANGES = Counter(
    "callqueue_suppression_changes_total",
    "numbers added to or removed from the suppression list, by source"
    " (api, import, do_not_contact, demo)",
    ["action", "source"],
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
    def __init__(self, engine: Engine, settings: Settings | None = None) -> None:
        self.engine = engine
        self.settings = settings

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
                rules: list[GaugeMetricFamily] = []
                if self.settings is not None:
                    try:
                        with conn.begin_nested():
                            rules = list(self._rules(conn))
                    except SQLAlchemyError:
                        pass  # a schema behind this code (readiness says so): depth still counts
            up.add_metric([], 1)
            yield depth
            yield from rules
        except SQLAlchemyError:
            up.add_metric([], 0)
        yield up

    def _rules(self, conn: Connection) -> Iterator[GaugeMetricFamily]:
        """Whether calling is allowed now (the rules in force, the database's clock), so a
        dashboard can put claims and refusals beside it, and the do-not-call list's size (an
        import that went wrong shows as a step)."""
        from app.rules.calling import calling_window

        assert self.settings is not None
        is_open = GaugeMetricFamily(
            "callqueue_calling_window_open",
            "1 while the calling rules in force allow calls, 0 outside calling hours",
        )
        is_open.add_metric([], 1 if calling_window(conn, self.settings).is_open else 0)
        yield is_open
        size = GaugeMetricFamily(
            "callqueue_suppressed_numbers", "numbers on the suppression (do-not-call) list"
        )
        size.add_metric(
            [], conn.execute(text("SELECT count(*) FROM suppressed_numbers")).scalar_one()
        )
        yield size
        yield self._callbacks(conn)

    def _callbacks(self, conn: Connection) -> GaugeMetricFamily:
        """The callbacks' figures of the statistics and the health report (SPEC 7.2): late is
        over the last 24 hours, as in the health report."""
        from app.queues.callbacks import LATE_WINDOW_MINUTES, callback_counts

        assert self.settings is not None
        family = GaugeMetricFamily(
            "callqueue_callbacks",
            "callbacks by state: scheduled, due, overdue (still scheduled CALLBACK_GRACE_MINUTES"
            " after due), assigned, late (handed out after the grace, last 24 hours)",
            labels=["queue_type", "state"],
        )
        counts = callback_counts(conn, self.settings.callback_grace_minutes, LATE_WINDOW_MINUTES)
        for queue_type, states in counts.items():
            for state, value in states.items():
                family.add_metric([queue_type, state], value)
        return family


def render(engine: Engine, settings: Settings | None = None) -> tuple[bytes, str]:
    """The exposition: every process's counters (or this one's alone), queue depth, and the
    calling rules' figures when ``settings`` (for their defaults) are given."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    depth = CollectorRegistry()
    depth.register(QueueDepthCollector(engine, settings))
    return generate_latest(registry) + generate_latest(depth), CONTENT_TYPE_LATEST
