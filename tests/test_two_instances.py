"""More than one machine (issue 5, item 6): two service instances, separate processes on separate
ports as on two hosts, against one PostgreSQL. The population triggered on both at the same moment
runs once; agents spread over both instances never get the same user twice, and every user of the
queue is either handed out exactly once or still pending."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, text

from app.auth.people import create_agent
from app.queues.kinds import SWAP_LOCK_KEY
from tests.conftest import CRON_SECRET
from tests.processes import clean_env, free_port, stop, wait_ready

CRON = {"Authorization": f"Bearer {CRON_SECRET}"}
USERS = 400
AGENTS = 16
QUEUE = "unsigned_users"
UNSIGNED_SWAP_LOCK_ID = 1
POPULATE = "/api/cron/populate-separated-queues"


def seed(replica_engine: Engine, store_engine: Engine) -> None:
    """USERS unsigned users (enabled, an open claim, no signature) and their score rows, in a few
    set-based statements rather than one round trip per row."""
    with replica_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO users (id, is_enabled, current_signature_file_id, first_name,"
                " last_name, phone_number, email_address, status, created_at)"
                " SELECT g, true, NULL, 'Test', 'User' || g, '07700 900123',"
                " 'user' || g || '@example.invalid', 'active', timestamptz '2025-01-01 00:00Z'"
                " FROM generate_series(1, :n) g"
            ),
            {"n": USERS},
        )
        conn.execute(
            text(
                "INSERT INTO claims (id, user_id, status, created_at)"
                " SELECT 5000000 + g, g, 'open', timestamptz '2025-01-01 00:00Z'"
                " FROM generate_series(1, :n) g"
            ),
            {"n": USERS},
        )
    with store_engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO user_call_scores (user_id, current_score, next_call_after, is_active,"
                " current_queue_type, created_at)"
                " SELECT g, g % 7, NULL, true, :queue, now() - interval '1 day'"
                " FROM generate_series(1, :n) g"
            ),
            {"n": USERS, "queue": QUEUE},
        )


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], str]:
    """One instance on its own port. Its log goes to a file, not a pipe: a full pipe nobody
    reads would stall the server's logging mid-test."""
    port = free_port()
    with log.open("w") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            text=True,
        )
    return proc, f"http://127.0.0.1:{port}"


def swap_lock_waiters(store_engine: Engine) -> int:
    """Sessions waiting for the unsigned queue's swap lock (the held-up population), in this
    test's database only: other databases on the same server use the same lock keys."""
    with store_engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                    " AND database = (SELECT oid FROM pg_database"
                    "                  WHERE datname = current_database())"
                    " AND classid::bigint = :key AND objid::bigint = :id AND objsubid = 2"
                ),
                {"key": SWAP_LOCK_KEY, "id": UNSIGNED_SWAP_LOCK_ID},
            ).scalar_one()
        )


def work(base: str, token: str) -> dict[str, Any]:
    """One agent's loop: next user, complete it as no_answer, until the queue answers 204."""
    headers = {"Authorization": f"Bearer {token}"}
    got: list[int] = []
    statuses: list[tuple[str, int, str]] = []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for _ in range(USERS + 10):
            claim = http.post(f"/api/queues/{QUEUE}/next-user")
            statuses.append(("next-user", claim.status_code, claim.text[:300]))
            if claim.status_code == 204:
                break
            if claim.status_code != 200:
                continue  # recorded; a 409/503 is retried, a 5xx fails the test below
            body = claim.json()
            got.append(body["user_id"])
            done = http.post(
                f"/api/assignments/{body['assignment_id']}/complete", json={"outcome": "no_answer"}
            )
            statuses.append(("complete", done.status_code, done.text[:300]))
        else:
            raise AssertionError(f"agent at {base} never saw the queue empty")
    return {"users": got, "statuses": statuses}


@pytest.mark.slow
def test_two_instances_share_one_population_and_never_hand_out_a_user_twice(
    store_url: str,
    replica_url: str,
    store_engine: Engine,
    replica_engine: Engine,
    tmp_path: Path,
) -> None:
    seed(replica_engine, store_engine)
    with store_engine.begin() as conn:
        tokens = [create_agent(conn, f"two-instances-{i}") for i in range(AGENTS)]
    env = clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        CRON_SECRET=CRON_SECRET,
        SCHEDULER_ENABLED="false",
        COOLING_PERIOD_MINUTES="0",
        QUEUE_SIZE_LIMIT="500",
        DB_POOL_SIZE="8",
        DB_MAX_OVERFLOW="2",
    )
    procs: list[subprocess.Popen[str]] = []
    bases: list[str] = []
    try:
        for i in range(2):  # both started before either is waited for: two hosts booting
            proc, base = start(env, tmp_path / f"instance-{i}.log")
            procs.append(proc)
            bases.append(base)
        for proc, base in zip(procs, bases, strict=True):
            wait_ready(base, proc)

        # -- the population, triggered on both instances at the same moment ------------------
        # Holding the unsigned queue's swap lock keeps whichever run wins the population lock
        # inside its swap, so the other trigger meets the lock for certain instead of maybe
        # starting after the first has finished.
        barrier = threading.Barrier(2)
        answers: dict[int, httpx.Response] = {}

        def trigger(i: int) -> None:
            barrier.wait()
            answers[i] = httpx.get(f"{bases[i]}{POPULATE}", headers=CRON, timeout=60)

        threads = [threading.Thread(target=trigger, args=(i,)) for i in range(2)]
        with store_engine.connect() as holder:
            holder.execute(
                text("SELECT pg_advisory_xact_lock(:key, :id)"),
                {"key": SWAP_LOCK_KEY, "id": UNSIGNED_SWAP_LOCK_ID},
            )
            for t in threads:
                t.start()
            deadline = time.monotonic() + 12  # under the swap's 15 s lock_timeout
            while time.monotonic() < deadline and not (answers and swap_lock_waiters(store_engine)):
                time.sleep(0.05)
            early = dict(answers)
            waiting = swap_lock_waiters(store_engine)
            holder.rollback()  # releases the swap lock
        for t in threads:
            t.join(60)
        assert waiting == 1, "no population reached the swap while the lock was held"
        assert len(early) == 1 and next(iter(early.values())).status_code == 409, early
        codes = sorted(r.status_code for r in answers.values())
        assert codes == [200, 409], {i: (r.status_code, r.text[:500]) for i, r in answers.items()}
        winner = next(r for r in answers.values() if r.status_code == 200)
        with store_engine.connect() as conn:
            runs = conn.execute(
                text("SELECT trigger, status FROM population_runs WHERE NOT dry_run")
            ).all()
            queue_size = conn.execute(
                text("SELECT count(*) FROM unsigned_users_queue WHERE status = 'pending'")
            ).scalar_one()
        assert [tuple(r) for r in runs] == [("cron", "succeeded")], (runs, winner.text[:500])
        assert queue_size == USERS

        # -- agents spread over both instances ------------------------------------------------
        with ThreadPoolExecutor(max_workers=AGENTS) as pool:
            results = list(
                pool.map(lambda i: work(bases[i % 2], tokens[i]), range(AGENTS), timeout=120)
            )
    finally:
        stopped = [(stop(proc)[0], tmp_path / f"instance-{i}.log") for i, proc in enumerate(procs)]
    # uvicorn re-raises SIGTERM once it has shut down gracefully: -15 is a clean stop.
    for code, log in stopped:
        err = log.read_text()
        assert code in (0, -signal.SIGTERM), (code, err[-3000:])
        assert "Application shutdown complete" in err, err[-3000:]
        assert "Traceback" not in err, err[-3000:]

    statuses = [s for r in results for s in r["statuses"]]
    server_errors = [s for s in statuses if s[1] >= 500]
    assert server_errors == [], server_errors[:5]
    unexpected = [s for s in statuses if s[1] not in (200, 204)]
    assert unexpected == [], unexpected[:5]
    handed = [u for r in results for u in r["users"]]
    twice = [u for u, n in Counter(handed).items() if n > 1]
    assert twice == [], twice
    assert set(handed) <= set(range(1, USERS + 1))
    # Both instances served users.
    assert all(any(r["users"] for r in results[k::2]) for k in (0, 1))

    with store_engine.connect() as conn:
        ledger = conn.execute(
            text(
                "SELECT user_id, count(*) FROM assignments WHERE queue_type = :queue"
                " GROUP BY user_id"
            ),
            {"queue": QUEUE},
        ).all()
        entries: dict[str, int] = dict(
            conn.execute(
                text("SELECT status, count(*) FROM unsigned_users_queue GROUP BY status")
            ).all()
        )
        pending_users = set(
            conn.execute(
                text("SELECT user_id FROM unsigned_users_queue WHERE status = 'pending'")
            ).scalars()
        )
        active = conn.execute(
            text("SELECT count(*) FROM assignments WHERE status = 'active'")
        ).scalar_one()
    assert [u for u, n in ledger if n > 1] == []
    assert sorted(u for u, _ in ledger) == sorted(handed)
    assert active == 0
    # Every user of the queue: handed out exactly once, or still pending; never both, none lost.
    assert pending_users.isdisjoint(handed)
    assert len(handed) + len(pending_users) == queue_size
    assert sum(entries.values()) == queue_size, entries
    assert entries.get("pending", 0) == len(pending_users)
