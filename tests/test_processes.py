"""Behaviour that only shows with real server processes: metrics summed over two workers, and
the built-in scheduler running each job once when two service processes run it."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, text

from app.auth.people import create_agent
from tests.conftest import CRON_SECRET, SUPPRESSION_KEY
from tests.factories import Replica, add_scores
from tests.processes import clean_env, command, free_port, stop, wait_ready

CRON = {"Authorization": f"Bearer {CRON_SECRET}"}


def start(args: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen(
        [*args, "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    wait_ready(base, proc)
    return proc, base


@pytest.fixture
def server_env(store_url: str, replica_url: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        CRON_SECRET=CRON_SECRET,
        # Given, so `serve` does not generate a development key into ./.data.
        SUPPRESSION_KEY=SUPPRESSION_KEY,
        COOLING_PERIOD_MINUTES="0",
        SCHEDULER_ENABLED="false",
        DB_POOL_SIZE="3",
        DB_MAX_OVERFLOW="2",
    )


def series(body: str) -> dict[str, float]:
    values = {}
    for line in body.splitlines():
        # A scrape counts itself: leave the /metrics route's own series out.
        if line.startswith("callqueue_") and 'route="/metrics"' not in line:
            name, value = line.rsplit(" ", 1)
            values[name] = float(value)
    return values


def scrape(base: str) -> dict[str, float]:
    # Several scrapes land on either worker; all must agree, since the figures are summed.
    bodies = {frozenset(series(httpx.get(f"{base}/metrics").text).items()) for _ in range(4)}
    assert len(bodies) == 1, "the two workers disagree"
    return dict(next(iter(bodies)))


@pytest.fixture
def two_worker_server(server_env: dict[str, str], tmp_path: Path) -> Iterator[str]:
    proc, base = start([*command(), "serve", "--workers", "2"], server_env)
    try:
        yield base
    finally:
        code, err = stop(proc)
        assert code == 0, err[-2000:]


@pytest.mark.slow
def test_metrics_move_by_exactly_the_expected_amounts_with_two_workers(
    two_worker_server: str, replica: Replica, store_engine: Engine
) -> None:
    base = two_worker_server
    replica.unsigned(1)
    replica.unsigned(2, phone="  ")  # invalid at claim time: no phone number
    replica.unsigned(3)
    add_scores(
        store_engine,
        [
            {"user_id": 2, "current_queue_type": "unsigned_users", "current_score": 0},
            {"user_id": 1, "current_queue_type": "unsigned_users", "current_score": 1},
            {"user_id": 3, "current_queue_type": "unsigned_users", "current_score": 2},
        ],
    )
    with store_engine.begin() as conn:
        token = create_agent(conn, "metrics-agent")
    agent = {"Authorization": f"Bearer {token}"}
    before = scrape(base)

    assert httpx.get(f"{base}/api/cron/populate-separated-queues", headers=CRON).status_code == 200
    claim = httpx.post(f"{base}/api/queues/unsigned_users/next-user", headers=agent)
    assert claim.status_code == 200 and claim.json()["user_id"] == 1
    done = httpx.post(
        f"{base}/api/assignments/{claim.json()['assignment_id']}/complete",
        json={"outcome": "no_answer"},
        headers=agent,
    )
    assert done.status_code == 200
    after = scrape(base)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    q = 'queue_type="unsigned_users"'
    assert delta(f'callqueue_populations_total{{dry_run="false",{q},status="succeeded"}}') == 1
    assert delta(f'callqueue_population_rows_total{{kind="populated",{q}}}') == 3
    assert delta(f'callqueue_claims_total{{{q},result="assigned",source="queue"}}') == 1
    assert delta(f'callqueue_invalid_entries_total{{{q},reason="no_phone_number"}}') == 1
    assert delta(f'callqueue_outcomes_total{{outcome="no_answer",{q}}}') == 1
    assert delta(f"callqueue_next_user_seconds_count{{{q}}}") == 1
    assert after[f'callqueue_queue_entries{{{q},status="pending"}}'] == 1
    assert after[f'callqueue_queue_entries{{{q},status="completed"}}'] == 1
    assert after[f'callqueue_queue_entries{{{q},status="invalid"}}'] == 1
    route = 'route="/api/queues/{queue_type}/next-user"'
    assert delta(f'callqueue_http_requests_total{{method="POST",{route},status="200"}}') == 1
    # No series is labelled with a person: no user ids, no phone numbers.
    assert [n for n in after if re.search(r"user_id=|07700", n)] == []


@pytest.mark.slow
def test_two_service_processes_run_one_population_per_tick(
    server_env: dict[str, str], replica: Replica, store_engine: Engine
) -> None:
    replica.unsigned(1)
    add_scores(store_engine, [{"user_id": 1, "current_queue_type": "unsigned_users"}])
    env = {**server_env, "SCHEDULER_ENABLED": "true"}
    uvicorn = [sys.executable, "-m", "uvicorn", "app.main:app"]
    procs = [start(uvicorn, env)[0] for _ in range(2)]
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with store_engine.connect() as conn:
                done = conn.execute(
                    text(
                        "SELECT count(*) FROM scheduler_ticks"
                        " WHERE job = 'population' AND finished_at IS NOT NULL"
                    )
                ).scalar()
            if done:
                break
            time.sleep(0.5)
        time.sleep(6)  # both schedulers poll again within the same tick
    finally:
        for proc in procs:
            stop(proc)
    with store_engine.connect() as conn:
        runs = (
            conn.execute(text("SELECT trigger FROM population_runs WHERE NOT dry_run"))
            .scalars()
            .all()
        )
        ticks = conn.execute(
            text("SELECT job, count(*) FROM scheduler_ticks GROUP BY job ORDER BY job")
        ).all()
    assert runs.count("scheduler") == 1
    assert dict(ticks)["population"] == 1
    assert dict(ticks)["lease_sweep"] >= 1
