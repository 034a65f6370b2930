"""Prometheus metrics: their definitions, which every layer updates, and the exposition.

Counters and histograms live in prometheus-client's multiprocess files when
``PROMETHEUS_MULTIPROC_DIR`` is set (``callqueue serve`` sets it for its workers), and are summed
across processes at scrape time. What is read from the database at scrape time (queue depth,
callbacks, the calling window) is not a process's opinion: its collectors are app/collectors.py.
"""

from __future__ import annotations

import os

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
from prometheus_client.registry import Collector

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
WEBHOOK_ATTEMPTS = Counter(
    "callqueue_webhook_attempts_total",
    "webhook delivery attempts by result: delivered, failed",
    ["result"],
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


def render(*collectors: Collector) -> tuple[bytes, str]:
    """The exposition: every process's counters (or this one's alone), then what ``collectors``
    read at scrape time."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    scraped = CollectorRegistry()
    for collector in collectors:
        scraped.register(collector)
    return generate_latest(registry) + generate_latest(scraped), CONTENT_TYPE_LATEST
