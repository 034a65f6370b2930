"""The mixed workload of issue 10: a call centre's day compressed into seconds, on two service
processes over real HTTP, checked from the agents' side and against the ledger (tests/workload.py
says what runs and what is checked). bench/mixed_workload.py runs the same for longer."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import Engine

from app.auth.people import create_agent
from tests import workload
from tests.conftest import CRON_SECRET
from tests.processes import clean_env, free_port, stop, wait_ready


def start(env: dict[str, str], log: Path) -> tuple[subprocess.Popen[str], str]:
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


@pytest.mark.slow
def test_mixed_workload_on_two_processes_keeps_every_promise(
    store_url: str,
    replica_url: str,
    store_engine: Engine,
    replica_engine: Engine,
    tmp_path: Path,
) -> None:
    cfg = workload.Config(users_per_queue=150, agents=12, seconds=20)
    workload.seed_data(replica_engine, store_engine, cfg)
    with store_engine.begin() as conn:
        tokens = [(f"mixed-{i}", create_agent(conn, f"mixed-{i}")) for i in range(cfg.agents)]
        supervisor = create_agent(conn, "mixed-supervisor", "supervisor")
    env = clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        APP_ENV="test",
        CRON_SECRET=CRON_SECRET,
        SCHEDULER_ENABLED="false",
        COOLING_PERIOD_MINUTES="0",
        QUEUE_SIZE_LIMIT="100",
        SKIP_COOLDOWN_MINUTES="0",
        DB_POOL_SIZE="8",
        DB_MAX_OVERFLOW="2",
    )
    procs, bases = [], []
    try:
        for i in range(2):
            proc, base = start(env, tmp_path / f"instance-{i}.log")
            procs.append(proc)
            bases.append(base)
        for proc, base in zip(procs, bases, strict=True):
            wait_ready(base, proc)
        record = workload.run(bases, tokens, supervisor, CRON_SECRET, store_engine, cfg)
    finally:
        stopped = [(stop(p)[0], tmp_path / f"instance-{i}.log") for i, p in enumerate(procs)]
    for code, log in stopped:
        err = log.read_text()
        assert code in (0, -signal.SIGTERM), (code, err[-3000:])
        assert "Traceback" not in err, err[-3000:]

    findings = workload.check(record, store_engine)
    print(workload.summary(findings))
    assert findings.problems() == {}
    figures = findings.figures
    # The run did what it claims to exercise.
    assert figures["hand_outs"] >= 100, figures
    assert figures["populations (status: count)"].get(200, 0) >= 5, figures
    assert figures["mode_changes"] >= 6, figures
    sources = figures["ledger_rows (source: count)"]
    assert sources.get("queue", 0) > 0 and sources.get("direct", 0) > 0, figures
    late = figures["late_completions (status: count)"]
    assert sum(late.values()) >= 5, figures
