"""Attempt caps (SPEC 7.3): completed attempts in any rolling 24 hours and 7 days, counted from the
ledger on the database's clock. Exactly at a cap and one below it, the windows' edges, statuses
that are not attempts, the callback exemption from the daily cap only; the population leaving
capped users out and direct mode's candidate statement doing the same, all through the one
database function, ``callqueue_attempt_cap``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from sqlalchemy import Engine, text

from app.config import Settings
from app.queues.kinds import CANDIDATES_SQL
from app.rules import caps
from app.services import Services
from app.vocabulary import QueueType
from tests.factories import Replica, add_scores, new_agent

UNSIGNED = str(QueueType.UNSIGNED_USERS)
HOUR = 3600
DAY = 24 * HOUR


def attempts(
    store: Engine,
    agent_id: int,
    user_id: int,
    seconds_ago: Sequence[int],
    *,
    status: str = "completed",
) -> None:
    """Ledger rows for ``user_id`` finished ``seconds_ago`` before the database's now (each
    handed out ten minutes before it finished)."""
    with store.begin() as conn:
        for ago in seconds_ago:
            conn.execute(
                text(
                    "INSERT INTO assignments (agent_id, user_id, queue_type, source,"
                    " priority_score, status, assigned_at, lease_expires_at, finished_at, outcome)"
                    " VALUES (:agent, :user, :q, 'queue', 0, :status,"
                    " now() - make_interval(secs => :ago + 600),"
                    " now() - make_interval(secs => :ago), now() - make_interval(secs => :ago),"
                    " CASE WHEN :status = 'completed' THEN 'no_answer' END)"
                ),
                {"agent": agent_id, "user": user_id, "q": UNSIGNED, "status": status, "ago": ago},
            )


def capped(store: Engine, settings: Settings, user_id: int, *, due_callback: bool = False) -> str:
    with store.connect() as conn:
        value = conn.execute(
            text("SELECT callqueue_attempt_cap(:u, :d, :w, :exempt)"),
            {
                "u": user_id,
                "d": settings.max_attempts_per_day,
                "w": settings.max_attempts_per_week,
                "exempt": due_callback,
            },
        ).scalar_one()
    return value or "none"


def cap_params(settings: Settings) -> dict[str, int]:
    return {
        caps.DAY_PARAM: settings.max_attempts_per_day,
        caps.WEEK_PARAM: settings.max_attempts_per_week,
    }


# Nine attempts over five days, two a day at most.
NINE = [d * DAY + h * HOUR for d in range(5) for h in (1, 2)][:9]

# Per user: completed attempts (seconds ago) and the cap the default caps (3 a day, 10 a week)
# put them at.
CASES: dict[int, tuple[list[int], str]] = {
    1: ([], "none"),
    2: ([HOUR, 2 * HOUR], "none"),  # one below the daily cap
    3: ([HOUR, 2 * HOUR, 3 * HOUR], "daily"),  # exactly at it
    4: ([HOUR, 2 * HOUR, 3 * HOUR, 4 * HOUR], "daily"),  # beyond it
    # The oldest attempt 23 h 59 min ago is still inside the rolling 24 hours...
    5: ([HOUR, 2 * HOUR, DAY - 60], "daily"),
    # ...one exactly 24 hours ago (and more by the time anyone asks) is not.
    6: ([HOUR, 2 * HOUR, DAY], "none"),
    # Nine in the week, at most two a day: one below the weekly cap.
    7: (NINE, "none"),
    # Ten: exactly at it.
    8: ([*NINE, 4 * DAY + 2 * HOUR], "weekly"),
    # Ten, the oldest 6 days 23 h 59 min ago: inside the rolling 7 days.
    9: ([*NINE, 7 * DAY - 60], "weekly"),
    # Ten, the oldest exactly 7 days ago: outside.
    10: ([*NINE, 7 * DAY], "none"),
    # At both caps: the weekly one is reported.
    11: (
        [HOUR * h for h in range(1, 4)] + [d * DAY for d in range(1, 7) for _ in (0, 1)],
        "weekly",
    ),
}


@pytest.fixture
def ledger(store_engine: Engine) -> int:
    agent = new_agent(store_engine, "caller")
    for user_id, (ago, _) in CASES.items():
        attempts(store_engine, agent.id, user_id, ago)
    return agent.id


def test_the_caps_per_user_exactly_at_and_around_each_edge(
    ledger: int, store_engine: Engine, settings: Settings
) -> None:
    assert {u: capped(store_engine, settings, u) for u in CASES} == {
        u: expected for u, (_, expected) in CASES.items()
    }


def test_only_completed_attempts_count(
    ledger: int, store_engine: Engine, settings: Settings
) -> None:
    """A hand-out released, expired or still live is not an attempt."""
    for status in ("released", "expired"):
        attempts(store_engine, ledger, 2, [30 * 60], status=status)
    assert capped(store_engine, settings, 2) == "none"
    attempts(store_engine, ledger, 2, [30 * 60])
    assert capped(store_engine, settings, 2) == "daily"


def test_a_due_callback_is_exempt_from_the_daily_cap_only(
    ledger: int, store_engine: Engine, settings: Settings
) -> None:
    assert capped(store_engine, settings, 4, due_callback=True) == "none"
    assert capped(store_engine, settings, 8, due_callback=True) == "weekly"
    assert capped(store_engine, settings, 11, due_callback=True) == "weekly"


def test_the_caps_follow_the_settings(
    ledger: int, store_engine: Engine, make_settings: Callable[..., Settings]
) -> None:
    loose = make_settings(max_attempts_per_day=5, max_attempts_per_week=12)
    strict = make_settings(max_attempts_per_day=1, max_attempts_per_week=2)
    assert capped(store_engine, loose, 4) == "none"
    assert capped(store_engine, loose, 8) == "none"
    assert capped(store_engine, strict, 2) == "weekly"
    assert capped(store_engine, strict, 6) == "weekly"


def test_the_population_leaves_out_users_at_a_cap(
    ledger: int, services: Services, replica: Replica, store_engine: Engine
) -> None:
    for user_id in CASES:
        replica.unsigned(user_id)
    add_scores(store_engine, [{"user_id": u, "current_queue_type": UNSIGNED} for u in CASES])

    report = services.population().run(trigger="test", queue=QueueType.UNSIGNED_USERS)

    assert report.queues[QueueType.UNSIGNED_USERS].status == "succeeded"
    with store_engine.connect() as conn:
        queued = set(
            conn.execute(
                text("SELECT user_id FROM unsigned_users_queue WHERE status = 'pending'")
            ).scalars()
        )
    assert queued == {u for u, (_, cap) in CASES.items() if cap == "none"} == {1, 2, 6, 7, 10}
    # Left out, not reclassified: their queue type stands.
    with store_engine.connect() as conn:
        types = set(
            conn.execute(text("SELECT DISTINCT current_queue_type FROM user_call_scores")).scalars()
        )
    assert types == {UNSIGNED}
    assert report.queues[QueueType.UNSIGNED_USERS].invalid == 0


def test_the_caps_move_with_the_database_clock(
    store_engine: Engine, services: Services, replica: Replica
) -> None:
    """The rolling window ends at the database's now: an attempt that leaves the window frees
    the user at the next population, with nothing else changed."""
    agent = new_agent(store_engine, "caller")
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": UNSIGNED}])
    attempts(store_engine, agent.id, 1, [HOUR, 2 * HOUR, DAY - 60])

    def queued() -> bool:
        services.population().run(trigger="test", queue=QueueType.UNSIGNED_USERS)
        with store_engine.connect() as conn:
            return bool(
                conn.execute(
                    text("SELECT count(*) FROM unsigned_users_queue WHERE status = 'pending'")
                ).scalar()
            )

    assert not queued()
    # A minute of database time later (the ledger moved back rather than the clock on).
    with store_engine.begin() as conn:
        conn.execute(text("UPDATE assignments SET finished_at = finished_at - interval '60 s'"))
    assert queued()


def test_direct_modes_candidate_statement_leaves_them_out_too(
    ledger: int, store_engine: Engine, settings: Settings
) -> None:
    add_scores(store_engine, [{"user_id": u, "current_queue_type": UNSIGNED} for u in CASES])
    statement = text(CANDIDATES_SQL + " LIMIT 100")
    params = {"queue_type": UNSIGNED, "cooling": 0, "live_leases_only": False}
    with store_engine.connect() as conn:
        found = set(conn.execute(statement, {**params, **cap_params(settings)}).scalars())
        every = set(
            conn.execute(
                statement, {**params, caps.DAY_PARAM: 10_000, caps.WEEK_PARAM: 10_000}
            ).scalars()
        )
    assert found == {1, 2, 6, 7, 10}
    assert every == set(CASES), "with caps nobody reaches, every lead is a candidate"
