"""Webhook delivery throughput: how many events a second reach one endpoint, beside the raw rate
of the same POSTs with no database in the way.

Run it from the repository root against the machine's PostgreSQL::

    .venv/bin/python -m bench.webhooks                  # 20,000 events
    .venv/bin/python -m bench.webhooks --events 5000    # about half a minute

A scratch store (``cq_bench_webhooks_store``, migrated), a receiver in its own process (aiohttp,
204 to every POST: ``bench/harness/receiver.py``), one endpoint subscribed to every event type,
and ``--events`` ``user.erased`` events in the outbox. Then, each timed:

1. dispatch: the outbox fanned out to the endpoint (``cq_webhook_dispatch``, 500 a statement);
2. one sender: ``Deliverer.drain()`` in this process (lease 50, sign, POST, record, one at a
   time), as one server process's background sender does;
3. two senders: the deliveries made due again and drained by two ``callqueue webhooks deliver``
   processes at once (leases with SKIP LOCKED share the work);
4. the raw baseline: the same bodies POSTed one after another on one keep-alive connection pool
   (httpcore, as the sender uses), unsigned, nothing read or written in PostgreSQL.

It checks that the receiver counted every attempt and that every delivery ended delivered.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpcore2
from alembic import command
from sqlalchemy import create_engine, text

from bench.harness.db import DEFAULT_SERVER, drop_databases, recreate_database
from bench.harness.receiver import start_receiver
from bench.harness.seed import subscribe_everything
from bench.harness.server import free_port

STORE_DB = "cq_bench_webhooks_store"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the PostgreSQL")
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--keep", action="store_true", help="keep the scratch database")
    args = parser.parse_args(argv)
    from app.health import alembic_config
    from app.webhooks.delivery import Deliverer

    n = args.events
    store_url = recreate_database(args.server, STORE_DB)
    command.upgrade(alembic_config(store_url), "head")
    receiver = start_receiver(free_port())
    engine = create_engine(store_url)
    try:
        subscribe_everything(store_url, receiver.url)
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO webhook_events (type, data) SELECT 'user.erased',"
                    " jsonb_build_object('user_id', g, 'erased_at', now())"
                    " FROM generate_series(1, :n) g"
                ),
                {"n": n},
            )
        deliverer = Deliverer(engine, timeout_seconds=10, private_allowed=True, grace_minutes=30)
        t0 = time.perf_counter()
        deliverer.dispatch()
        dispatch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        made = deliverer.drain()
        one_s = time.perf_counter() - t0
        deliverer.close()
        assert made == n, (made, n)

        with engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE webhook_deliveries SET status = 'pending', round_attempts = 0,"
                    " next_attempt_at = now(), finished_at = NULL"
                )
            )
        env = {
            **os.environ,
            "DATABASE_URL": store_url,
            "APP_ENV": "development",
            "LOG_LEVEL": "WARNING",
        }
        cli = str(Path(sys.executable).with_name("callqueue"))
        t0 = time.perf_counter()
        procs = [
            subprocess.Popen([cli, "webhooks", "deliver"], env=env, stdout=subprocess.PIPE)
            for _ in range(2)
        ]
        split = [json.loads(p.communicate(timeout=600)[0])["attempts"] for p in procs]
        two_s = time.perf_counter() - t0

        with engine.connect() as conn:
            delivered = conn.execute(
                text("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'")
            ).scalar_one()
            bodies = [
                json.dumps(
                    {"type": t, "timestamp": at.isoformat(), "seq": seq, "data": d},
                    separators=(",", ":"),
                ).encode()
                for t, at, seq, d in conn.execute(
                    text(
                        "SELECT ev.type, ev.occurred_at, d.seq, ev.data FROM webhook_events ev"
                        " JOIN webhook_deliveries d ON d.event_id = ev.id ORDER BY d.seq"
                    )
                )
            ]
        pool = httpcore2.ConnectionPool()
        t0 = time.perf_counter()
        for body in bodies:
            pool.request(
                "POST",
                receiver.url,
                headers=[(b"Content-Type", b"application/json")],
                content=body,
            )
        raw_s = time.perf_counter() - t0
        pool.close()
        counted = receiver.received()
    finally:
        receiver.stop()
        engine.dispose()
        if not args.keep:
            drop_databases(args.server, (STORE_DB,))

    print(f"{n:,} events to one endpoint (a local receiver answering 204), {os.cpu_count()} CPUs")
    print(
        f"  dispatch (outbox to deliveries): {dispatch_s:6.2f} s  {n / dispatch_s:8,.0f} events/s"
    )
    print(f"  one sender (Deliverer.drain):           {one_s:6.2f} s  {n / one_s:8,.0f} events/s")
    print(
        f"  two senders (callqueue webhooks deliver x2, including start-up): {two_s:6.2f} s"
        f"  {n / two_s:8,.0f} events/s (split {split[0]:,} / {split[1]:,})"
    )
    print(f"  raw baseline (the same POSTs, no DB):   {raw_s:6.2f} s  {n / raw_s:8,.0f} requests/s")
    print(f"  one sender / raw: {raw_s / one_s:.2f}")
    ok = delivered == n and counted == 3 * n and sum(split) == n
    print(
        f"delivered {delivered:,} of {n:,}; the receiver counted {counted:,} requests"
        f" (expected {3 * n:,}): {'OK' if ok else 'MISMATCH'}"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
