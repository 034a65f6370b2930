"""Discovery (SPEC 7.1): new replica users and requirements become classified score rows, on a
PostgreSQL and on a MariaDB replica (``replica_db`` runs each test on both)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, event, text

from app.errors import DiscoveryRunning
from app.intake.discovery import DISCOVERY_LOCK_KEY, Discovery, DiscoveryOptions, discovery_lock
from app.queues.kinds import POPULATION_LOCK_KEY
from app.replica.reader import Replica
from app.services import Services
from tests.factories import Replica as ReplicaRows
from tests.factories import add_scores
from tests.processes import clean_env, command

REPORT_KEYS = {
    "success",
    "run_id",
    "scanned_users",
    "scanned_requirements",
    "created",
    "reclassified",
    "watermark",
    "duration_ms",
    "error",
}
UNSIGNED, OUTSTANDING = "unsigned_users", "outstanding_requests"
MARCH = datetime(2025, 3, 1, tzinfo=UTC)


def whole_seconds(moment: datetime) -> datetime:
    """MariaDB's DATETIME keeps whole seconds: test times that survive both engines."""
    return moment.replace(microsecond=0)


def discovery(
    services: Services, replica_db: Engine, *, batch_size: int = 2000, progress: float = 5.0
) -> Discovery:
    return Discovery(
        services.engine,
        Replica(replica_db, batch_size),
        DiscoveryOptions(lookback_minutes=120, batch_size=batch_size, progress_seconds=progress),
        discovery_lock(services.direct_engine, 60),
    )


def score_rows(store: Engine) -> dict[int, tuple[Any, ...]]:
    with store.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT user_id, current_queue_type, current_score, is_active, total_attempts"
                " FROM user_call_scores"
            )
        )
        return {r.user_id: tuple(r)[1:] for r in rows}


def transitions(store: Engine) -> list[tuple[Any, ...]]:
    with store.connect() as conn:
        return [
            tuple(r)
            for r in conn.execute(
                text(
                    "SELECT user_id, from_queue_type, to_queue_type, reason, source, run_id"
                    " FROM queue_transitions ORDER BY user_id, id"
                )
            )
        ]


def one_per_branch(rows: ReplicaRows, created: datetime) -> None:
    """A user for every branch of SPEC 3.1, all created at ``created``."""
    rows.unsigned(1, created_at=created)  # 3: no signature -> unsigned
    rows.outstanding(2, created_at=created)  # 4: a valid pending requirement -> outstanding
    rows.user(3, enabled=False, signed=False, created_at=created)  # 1: disabled
    rows.claim(3)
    rows.user(4, signed=False, created_at=created)  # 2: no claim at all
    rows.user(5, signed=False, created_at=created)  # 2: only a cancelled claim
    rows.claim(5, status="CANCELLED")
    rows.user(6, created_at=created)  # 5: only excluded types and the base id_document
    claim = rows.claim(6)
    rows.requirement(claim, "signature")
    rows.requirement(claim, "id_document", reason="base requirement for claim.")
    rows.user(7, created_at=created)  # 5: everything completed
    rows.requirement(rows.claim(7), status="completed")
    rows.user(8, created_at=created)  # 5: pending only on a cancelled claim
    rows.claim(8)
    rows.requirement(rows.claim(8, status="cancelled"))
    rows.user(9, created_at=created)  # 4: statuses in mixed case
    rows.requirement(rows.claim(9, status="Open"), "payslip", status="PENDING")
    # Three users who already have score rows: one stale, one right, one in no queue any more.
    rows.outstanding(10, created_at=created)
    rows.unsigned(11, created_at=created)
    rows.user(12, enabled=False, created_at=created)


def test_a_first_run_creates_exactly_the_missing_rows_and_a_second_creates_nothing(
    services: Services, store_engine: Engine, replica_db: Engine, rows: ReplicaRows
) -> None:
    created_at = whole_seconds(datetime.now(UTC) - timedelta(minutes=10))
    one_per_branch(rows, created_at)
    add_scores(
        store_engine,
        [
            {"user_id": 10, "current_queue_type": UNSIGNED, "current_score": 7},
            {"user_id": 11, "current_queue_type": UNSIGNED, "current_score": 4},
            {"user_id": 12, "current_queue_type": OUTSTANDING},
            {"user_id": 99, "current_queue_type": UNSIGNED},  # unknown to the replica: untouched
        ],
    )

    first = discovery(services, replica_db).run(trigger="test")

    body = first.as_dict()
    assert set(body) == REPORT_KEYS
    assert body["success"] is True and body["error"] is None
    assert (body["scanned_users"], body["scanned_requirements"]) == (12, 0)  # a full walk
    assert (body["created"], body["reclassified"]) == (3, 2)
    assert body["watermark"] == created_at.isoformat()
    assert score_rows(store_engine) == {
        1: (UNSIGNED, 0, True, 0),
        2: (OUTSTANDING, 0, True, 0),
        9: (OUTSTANDING, 0, True, 0),
        10: (OUTSTANDING, 7, True, 0),
        11: (UNSIGNED, 4, True, 0),
        12: (None, 0, True, 0),
        99: (UNSIGNED, 0, True, 0),
    }
    assert transitions(store_engine) == [
        (10, UNSIGNED, OUTSTANDING, "pending_requirements", "discovery", first.run_id),
        (12, OUTSTANDING, None, "user_disabled", "discovery", first.run_id),
    ]
    with store_engine.connect() as conn:
        run = conn.execute(text("SELECT * FROM discovery_runs")).one()
    assert (run.status, run.trigger, run.full_walk, run.resumed) == (
        "succeeded",
        "test",
        True,
        False,
    )
    assert (run.scanned_users, run.created, run.reclassified, run.error) == (12, 3, 2, None)
    assert run.watermark == created_at

    # Everything is still inside the lookback: read again, and nothing new comes of it.
    second = discovery(services, replica_db).run(trigger="test").as_dict()

    assert second["success"] is True
    assert (second["scanned_users"], second["created"], second["reclassified"]) == (12, 0, 0)
    assert second["scanned_requirements"] == 0  # the book's claims and requirements are old
    assert second["watermark"] == created_at.isoformat()
    assert len(score_rows(store_engine)) == 7
    assert len(transitions(store_engine)) == 2


def test_the_watermark_and_its_lookback(
    services: Services, store_engine: Engine, replica_db: Engine, rows: ReplicaRows
) -> None:
    now = whole_seconds(datetime.now(UTC))
    watermark = now - timedelta(minutes=10)
    rows.unsigned(1, created_at=watermark)
    rows.user(22, signed=False, created_at=now - timedelta(days=30))  # no claim yet: no queue
    rows.user(23, created_at=now - timedelta(days=30))  # signed, nothing outstanding
    rows.requirement(rows.claim(23, created_at=now - timedelta(days=30)), status="completed")
    add_scores(store_engine, [{"user_id": 23, "current_queue_type": None}])
    first = discovery(services, replica_db).run(trigger="test")
    assert (first.created, first.watermark) == (1, watermark)

    # A lagging replica delivers a user created an hour before the watermark (inside the
    # lookback) and one created three hours before it (outside: the watermark is respected).
    rows.unsigned(20, created_at=watermark - timedelta(minutes=60))
    rows.unsigned(21, created_at=watermark - timedelta(minutes=180))
    # An old user's first claim arrives; another old user gains a pending requirement.
    rows.claim(22, created_at=now)
    rows.requirement(rows.claim(23, created_at=now - timedelta(days=30)), created_at=now)

    second = discovery(services, replica_db).run(trigger="test")

    assert second.success, second.error
    assert (second.scanned_users, second.scanned_requirements) == (2, 1)  # users 1 and 20
    assert (second.created, second.reclassified) == (2, 1)
    stored = score_rows(store_engine)
    assert {uid: row[0] for uid, row in stored.items()} == {
        1: UNSIGNED,
        20: UNSIGNED,
        22: UNSIGNED,
        23: OUTSTANDING,
    }
    assert 21 not in stored
    assert transitions(store_engine) == [
        (23, None, OUTSTANDING, "pending_requirements", "discovery", second.run_id)
    ]
    # The newest row seen was created now; the watermark never passes the pass's start.
    with store_engine.connect() as conn:
        state = conn.execute(text("SELECT watermark, pass_phase FROM discovery_state")).one()
        db_now = conn.execute(text("SELECT now()")).scalar_one()
    assert state.pass_phase is None
    assert watermark < second.watermark == state.watermark <= db_now
    assert second.watermark is not None and second.watermark >= now - timedelta(seconds=1)


def test_a_quiet_pass_keeps_the_watermark(
    services: Services, store_engine: Engine, replica_db: Engine, rows: ReplicaRows
) -> None:
    """Nothing new inside the window (replication stalled, say): the watermark waits."""
    old = whole_seconds(datetime.now(UTC) - timedelta(days=2))
    rows.unsigned(1, created_at=old)
    first = discovery(services, replica_db).run(trigger="test")
    assert first.watermark == old
    again = discovery(services, replica_db).run(trigger="test")
    assert (again.scanned_users, again.created, again.watermark) == (1, 0, old)


def count_statements(engine: Engine) -> Callable[[], int]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(engine, "before_cursor_execute", before)
    return lambda: len(seen)


@pytest.mark.parametrize("users,batch", [(30, 10), (300, 100)])
def test_replica_statements_grow_with_batches_not_users(
    services: Services, replica_db: Engine, rows: ReplicaRows, users: int, batch: int
) -> None:
    for uid in range(1, users + 1):
        rows.unsigned(uid, created_at=MARCH)
    replica = create_engine(replica_db.url)  # a listener of its own, on a fresh engine
    statements = count_statements(replica)
    try:
        run = Discovery(
            services.engine,
            Replica(replica, batch),
            DiscoveryOptions(lookback_minutes=120, batch_size=batch),
            discovery_lock(services.direct_engine, 60),
        ).run(trigger="test")
    finally:
        replica.dispose()
    assert (run.success, run.created) == (True, users)
    # The highest id (for progress), then per batch a scan and a classification (MariaDB sets
    # its session's GROUP_CONCAT limit before each), then the scan that finds the end.
    per_batch = 2 if replica_db.dialect.name == "postgresql" else 3
    assert statements() == 1 + 3 * per_batch + 1


def test_a_second_trigger_is_refused_while_one_runs(
    services: Services,
    store_engine: Engine,
    replica_db: Engine,
    rows: ReplicaRows,
    client: TestClient,
    cron_headers: dict[str, str],
) -> None:
    rows.unsigned(1)
    with store_engine.connect() as holder:
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": DISCOVERY_LOCK_KEY})
        try:
            with pytest.raises(DiscoveryRunning):
                discovery(services, replica_db).run(trigger="test")
            answer = client.get("/api/cron/discover", headers=cron_headers)
            assert answer.status_code == 409
            assert answer.json() == {
                "error": "DiscoveryRunning",
                "detail": "another discovery is running; try again when it ends",
            }
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": DISCOVERY_LOCK_KEY})
        # Its own key: a population running does not hold discovery up.
        holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": POPULATION_LOCK_KEY})
        try:
            assert discovery(services, replica_db).run(trigger="test").created == 1
        finally:
            holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": POPULATION_LOCK_KEY})
    with store_engine.connect() as conn:
        runs = conn.execute(text("SELECT status FROM discovery_runs")).scalars().all()
    assert runs == ["succeeded"]  # a refused trigger leaves no run behind


def test_progress_is_logged_on_a_first_full_walk(
    services: Services,
    replica_db: Engine,
    rows: ReplicaRows,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for uid in range(1, 41):
        rows.unsigned(uid)
    caplog.set_level(logging.INFO, logger="app.intake.discovery")

    run = discovery(services, replica_db, batch_size=10, progress=0).run(trigger="test")

    assert run.created == 40
    progress = [r for r in caplog.records if r.getMessage() == "discovery.progress"]
    assert [r.__dict__["percent_of_users"] for r in progress] == [25.0, 50.0, 75.0, 100.0, 100.0]
    assert [r.__dict__["rows_created"] for r in progress] == [10, 20, 30, 40, 40]
    started = next(r for r in caplog.records if r.getMessage() == "discovery.started")
    assert (started.__dict__["full_walk"], started.__dict__["resumed"]) == (True, False)


def test_a_replica_that_does_not_answer_fails_the_run_cleanly(
    make_services: Callable[..., Services],
    make_client: Callable[..., TestClient],
    store_engine: Engine,
    cron_headers: dict[str, str],
) -> None:
    nowhere = "postgresql://postgres@127.0.0.1:1/replica"
    report = make_services(replica_database_url=nowhere).discovery().run(trigger="test")

    assert report.success is False
    assert report.error == "the claims replica did not answer (OperationalError)"
    answer = make_client(replica_database_url=nowhere).get(
        "/api/cron/discover", headers=cron_headers
    )
    assert answer.status_code == 500
    assert set(answer.json()) == REPORT_KEYS and answer.json()["success"] is False
    with store_engine.connect() as conn:
        runs = conn.execute(text("SELECT status, error FROM discovery_runs")).all()
        created = conn.execute(text("SELECT count(*) FROM user_call_scores")).scalar_one()
    assert [tuple(r) for r in runs] == [("failed", report.error)] * 2
    assert created == 0


def test_a_run_killed_mid_walk_is_resumed_with_no_gap_and_no_duplicate(
    store_url: str, store_engine: Engine, replica_db: Engine, services: Services
) -> None:
    """``callqueue discover`` killed with SIGKILL part-way, then run again: every user who
    belongs in a queue has exactly one score row, and the two runs' figures add up."""
    users = 1500
    with replica_db.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, is_enabled, current_signature_file_id, created_at)"
                " VALUES (:id, true, :sig, :at)"
            ),
            [
                {"id": uid, "sig": None if uid % 3 else 7, "at": MARCH}
                for uid in range(1, users + 1)
            ],
        )
        conn.execute(
            text("INSERT INTO claims (id, user_id, status, created_at) VALUES (:id, :id, :s, :at)"),
            [
                {"id": uid, "s": "cancelled" if uid % 5 == 0 else "open", "at": MARCH}
                for uid in range(1, users + 1)
            ],
        )
    # Unsigned with an open claim: not a multiple of 3 or of 5.
    expected = {uid for uid in range(1, users + 1) if uid % 3 and uid % 5}
    env = clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_db.url.render_as_string(hide_password=False),
        APP_ENV="test",
        REPLICA_BATCH_SIZE="5",
        DISCOVERY_BATCH_SIZE="5",
    )
    proc = subprocess.Popen(
        [*command(), "discover"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with store_engine.connect() as conn:
                done = conn.execute(
                    text("SELECT pass_after_id FROM discovery_state WHERE pass_phase = 'users'")
                ).scalar()
            if done is not None and done >= 300:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    with store_engine.connect() as conn:
        state = conn.execute(text("SELECT pass_phase, pass_after_id FROM discovery_state")).one()
        killed = conn.execute(text("SELECT status, created FROM discovery_runs")).one()
        before = conn.execute(text("SELECT count(*) FROM user_call_scores")).scalar_one()
    position = state.pass_after_id
    assert state.pass_phase == "users" and 300 <= position < users, "not killed part-way"
    assert killed.status == "running" and killed.created == before > 0

    # The lock died with the process: a new run takes it at once and resumes.
    rerun = discovery(services, replica_db, batch_size=50).run(trigger="test")

    assert rerun.success, rerun.error
    with store_engine.connect() as conn:
        stored = conn.execute(text("SELECT user_id FROM user_call_scores")).scalars().all()
        runs = conn.execute(
            text("SELECT status, resumed, created, error FROM discovery_runs ORDER BY started_at")
        ).all()
        state = conn.execute(text("SELECT watermark, pass_phase FROM discovery_state")).one()
    assert len(stored) == len(set(stored))  # no duplicate
    assert set(stored) == expected  # no gap
    assert runs[0].status == "failed" and runs[0].error.startswith("interrupted")
    assert (runs[1].status, runs[1].resumed) == ("succeeded", True)
    assert runs[0].created + runs[1].created == len(expected)
    assert rerun.scanned_users == users - position  # from the last committed batch on
    assert state.pass_phase is None and state.watermark == MARCH
