"""The mixed workload of issue 10 for longer than CI can afford (tests/workload.py says what it
runs and checks; tests/test_mixed_workload.py runs it for 20 seconds).

    .venv/bin/python -m bench.mixed_workload                     # 5 minutes, 32 agents
    .venv/bin/python -m bench.mixed_workload --seconds 60 --agents 16

Two service processes (uvicorn, one worker each) on scratch databases, agents over HTTP doing
every kind of outcome (some after their lease ran out), releases, skips and abandoned calls,
populations back to back through both processes, MIGRATION_MODE flipped through its three values.
Prints what the agents saw and every promise checked; exits 1 if any was broken.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from sqlalchemy import create_engine

from bench.harness.accounting import load_average
from bench.harness.db import DEFAULT_SERVER, drop_databases, recreate_database
from bench.harness.server import CRON_SECRET, start_server
from tests import workload

STORE_DB = "cq_bench_mixed_store"
REPLICA_DB = "cq_bench_mixed_replica"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--agents", type=int, default=32)
    parser.add_argument("--users-per-queue", type=int, default=2000)
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    args = parser.parse_args(argv)

    from alembic import command

    from app.auth.people import create_agent
    from app.health import alembic_config
    from app.replica.schema import replica_metadata

    cfg = workload.Config(
        users_per_queue=args.users_per_queue, agents=args.agents, seconds=args.seconds
    )
    print(f"load average at start: {load_average()}")
    store_url = recreate_database(args.server, STORE_DB)
    replica_url = recreate_database(args.server, REPLICA_DB)
    command.upgrade(alembic_config(store_url), "head")
    store = create_engine(store_url, pool_size=4)
    replica = create_engine(replica_url)
    replica_metadata.create_all(replica)
    workload.seed_data(replica, store, cfg)
    with store.begin() as conn:
        tokens = [(f"mixed-{i}", create_agent(conn, f"mixed-{i}")) for i in range(cfg.agents)]
        supervisor = create_agent(conn, "mixed-supervisor", "supervisor")
    servers = []
    try:
        with tempfile.TemporaryDirectory() as first, tempfile.TemporaryDirectory() as second:
            for prom_dir in (first, second):
                servers.append(
                    start_server(
                        store_url,
                        replica_url,
                        prom_dir,
                        workers=1,
                        pool_size=10,
                        max_overflow=5,
                        extra_env={
                            "COOLING_PERIOD_MINUTES": "0",
                            "QUEUE_SIZE_LIMIT": str(max(100, cfg.users_per_queue // 4)),
                            "SKIP_COOLDOWN_MINUTES": "0",
                        },
                    )
                )
            print(
                f"{cfg.agents} agents on 2 processes, {2 * cfg.users_per_queue:,} users,"
                f" {cfg.seconds:.0f} s"
            )
            t0 = time.monotonic()
            record = workload.run(
                [s.base_url for s in servers], tokens, supervisor, CRON_SECRET, store, cfg
            )
            elapsed = time.monotonic() - t0
            for server in servers:
                for line in server.log_summary():
                    print(line)
    finally:
        for server in servers:
            server.stop()
    findings = workload.check(record, store)
    store.dispose()
    replica.dispose()
    print(workload.summary(findings))
    print(
        f"{findings.figures['hand_outs'] / elapsed:.1f} hand-outs/s over {elapsed:.0f} s;"
        f" load average at end: {load_average()}"
    )
    if not args.keep:
        drop_databases(args.server, (STORE_DB, REPLICA_DB))
    return 1 if findings.problems() else 0


if __name__ == "__main__":
    raise SystemExit(main())
