"""What /metrics reads from the database at scrape time: queue depth, the calling window, the
do-not-call list's size and the callbacks' figures. Every worker reports the same truth, read from
the services' own queries (the metric definitions themselves are app/metrics.py)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import SQLAlchemyError

from app import metrics
from app.config import Settings
from app.models.queues import ENTRY_STATUSES
from app.queues.callbacks import LATE_WINDOW_MINUTES, callback_counts
from app.queues.kinds import KINDS
from app.rules.calling import calling_window


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
        yield from self._webhooks(conn)

    def _callbacks(self, conn: Connection) -> GaugeMetricFamily:
        """The callbacks' figures of the statistics and the health report (SPEC 7.2): late is
        over the last 24 hours, as in the health report."""
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

    @staticmethod
    def _webhooks(conn: Connection) -> Iterator[GaugeMetricFamily]:
        """Events per endpoint by delivery state (SPEC 8.4), and the outbox's events not yet
        dispatched to the endpoints."""
        family = GaugeMetricFamily(
            "callqueue_webhook_deliveries",
            "webhook deliveries by endpoint and status: pending, delivered, failed",
            labels=["endpoint_id", "status"],
        )
        rows = conn.execute(
            text(
                "SELECT e.id, s.status, count(d.id) FROM webhook_endpoints e"
                " CROSS JOIN (VALUES ('pending'), ('delivered'), ('failed')) AS s(status)"
                " LEFT JOIN webhook_deliveries d ON d.endpoint_id = e.id AND d.status = s.status"
                " GROUP BY e.id, s.status"
            )
        ).all()
        for endpoint_id, status, count in rows:
            family.add_metric([str(endpoint_id), status], count)
        yield family
        waiting = GaugeMetricFamily(
            "callqueue_webhook_events_undispatched",
            "events in the outbox not yet handed to their endpoints",
        )
        waiting.add_metric(
            [],
            conn.execute(
                text("SELECT count(*) FROM webhook_events WHERE NOT dispatched")
            ).scalar_one(),
        )
        yield waiting


def render(engine: Engine, settings: Settings | None = None) -> tuple[bytes, str]:
    """The exposition: every process's counters, queue depth, and the calling rules' figures
    when ``settings`` (for their defaults) are given."""
    return metrics.render(QueueDepthCollector(engine, settings))
