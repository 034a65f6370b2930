"""Due, overdue and late callbacks, at the boundaries of CALLBACK_GRACE_MINUTES on the database's
clock, as the statistics, the health report and the metrics count them (SPEC 7.2)."""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, Engine, text

from app.queues.callbacks import callback_counts
from tests.callbacks.conftest import UNSIGNED, Desk
from tests.conftest import CRON_SECRET
from tests.factories import new_agent

GRACE = 15
HEALTH = "/api/cron/populate-separated-queues"  # POST: the health report
CRON = {"Authorization": f"Bearer {CRON_SECRET}"}


def _add(conn: Connection, user: int, owner: int, due: str, handed_out: str | None, status: str):
    """A callback whose times are given relative to the transaction's now() (fixed within it),
    so a boundary is exact: no time passes between the rows and the count."""
    conn.execute(
        text(
            "INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id, status,"
            " first_handed_out_at)"
            f" VALUES (:user, 'unsigned_users', now() - interval '{due}', :owner, :status,"
            + (f" now() - interval '{due}' + interval '{handed_out}')" if handed_out else " NULL)")
        ),
        {"user": user, "owner": owner, "status": status},
    )


def test_overdue_and_late_at_the_grace_boundaries(store_engine: Engine) -> None:
    owner = new_agent(store_engine, "owner").id
    with store_engine.begin() as conn:
        # Still scheduled: due in a minute (not due), due just now, due exactly 15 minutes
        # ago (not yet overdue: overdue is strictly after), due 15 minutes and 1 µs ago.
        _add(conn, 1, owner, "-1 minute", None, "scheduled")
        _add(conn, 2, owner, "0 seconds", None, "scheduled")
        _add(conn, 3, owner, "15 minutes", None, "scheduled")
        _add(conn, 4, owner, "15 minutes 1 microsecond", None, "scheduled")
        # Handed out (then completed): exactly at the end of the grace (on time), 1 µs after it
        # (late); a late one from two days ago is outside the 24 hours.
        _add(conn, 5, owner, "1 hour", "15 minutes", "completed")
        _add(conn, 6, owner, "1 hour", "15 minutes 1 microsecond", "completed")
        _add(conn, 7, owner, "2 days", "1 hour", "completed")
        # With an agent now.
        _add(conn, 8, owner, "5 minutes", "1 minute", "assigned")
        counts = callback_counts(conn, GRACE, 24 * 60)
    assert counts[UNSIGNED] == {"scheduled": 4, "due": 3, "overdue": 1, "assigned": 1, "late": 1}
    assert counts["outstanding_requests"] == {
        "scheduled": 0,
        "due": 0,
        "overdue": 0,
        "assigned": 0,
        "late": 0,
    }


def test_stats_health_and_metrics_show_the_callbacks(desk: Callable[..., Desk]) -> None:
    d = desk(users=4, callback_grace_minutes=GRACE)
    on_time = d.book("ann")["callback"]["id"]  # user 100
    overdue = d.book("ann")["callback"]["id"]  # user 101
    health = d.client.post(HEALTH, headers=CRON)
    assert "overdue" not in " ".join(health.json()["issues"])

    d.due(on_time, minutes_ago=GRACE - 1)
    d.due(overdue, minutes_ago=GRACE + 1)
    stats = d.client.get("/api/queues/stats", headers=d.agents["bob"]).json()
    assert stats["queues"][UNSIGNED]["callbacks"] == {
        "scheduled": 2,
        "due": 2,
        "overdue": 1,
        "assigned": 0,
        "late": 0,
    }
    health = d.client.post(HEALTH, headers=CRON).json()
    assert health["status"] == "degraded"
    assert any("1 callbacks of unsigned_users are overdue" in i for i in health["issues"])
    assert health["queues"][UNSIGNED]["callbacks"]["overdue"] == 1

    # ann's own, oldest first: the overdue one, handed out late, then the other, on time.
    got = d.next_user("ann")
    assert got.json()["callback_id"] == overdue
    d.complete("ann", got.json()["assignment_id"], "no_answer")
    got = d.next_user("ann")
    assert got.json()["callback_id"] == on_time
    stats = d.client.get("/api/queues/stats", headers=d.agents["bob"]).json()
    assert stats["queues"][UNSIGNED]["callbacks"] == {
        "scheduled": 0,
        "due": 0,
        "overdue": 0,
        "assigned": 1,
        "late": 1,
    }
    health = d.client.post(HEALTH, headers=CRON).json()
    assert not any("overdue" in i for i in health["issues"])
    metrics = d.client.get("/metrics").text
    assert 'callqueue_callbacks{queue_type="unsigned_users",state="late"} 1.0' in metrics
    assert 'callqueue_callbacks{queue_type="unsigned_users",state="assigned"} 1.0' in metrics
