"""Held-snapshot benchmark (issue 5, item 3): claims beside a transaction held open for 60 s.

Run it from the repository root against the machine's PostgreSQL::

    .venv/bin/python -m bench.held_snapshot                 # 50,000 entries, 30 + 60 + 30 s
    .venv/bin/python -m bench.held_snapshot --before 5 --hold 10 --after 5 --entries 10000

It reuses ``bench/harness/``: the same scratch store and replica (here ``cq_bench_held_store`` and
``cq_bench_held_replica``, built with server-side SQL), one population, 64 agents, the same
``uvicorn app.main:app --workers 2`` subprocess and the same load generator (``next-user`` then
``complete``, every agent back to back). Three phases, flat out:

1. ``--before`` seconds (30) with nothing else running;
2. ``--hold`` seconds (60) while a separate connection holds ``BEGIN ISOLATION LEVEL REPEATABLE
   READ; SELECT count(*) FROM unsigned_users_queue;`` open: its snapshot pins the xmin horizon, so
   neither VACUUM nor page pruning may remove the dead row versions the claims leave behind. Just
   before it commits, a manual ``VACUUM`` of the queue tables shows that nothing could be removed;
3. the snapshot commits; if autovacuum is off on this server (it is printed) a manual
   ``VACUUM (ANALYZE)`` of the queue tables and ``assignments`` shows the recovery; then
   ``--after`` seconds (30).

Per phase it prints cycles, cycles/s, next-user p50/p99 (ms, at the load generator) and non-2xx
responses; at each phase boundary ``n_live_tup``/``n_dead_tup`` of the queue tables and
``assignments``; the queue tables' ``reloptions`` (fillfactor and autovacuum parameters, set by
the initial migration); duplicates from the agents' side and the ledger (must be 0). The claims
must keep succeeding while the snapshot is held.
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import time
from typing import Any

import psycopg

from bench.harness.accounting import load_average
from bench.harness.checks import duplicate_total, duplicates, ledger_check
from bench.harness.db import DEFAULT_SERVER, drop_databases, libpq_url, maintain, table_stats
from bench.harness.load import LoadGenerator, ModeResult, loop_factory, pct, stop_load
from bench.harness.seed import TABLE, agent_headers, build, create_agents, populate
from bench.harness.server import Server, start_server

STORE_DB = "cq_bench_held_store"
REPLICA_DB = "cq_bench_held_replica"
QUEUE_TABLES = ("unsigned_users_queue", "outstanding_requests_queue")
WATCHED = (*QUEUE_TABLES, "assignments")


def print_stats(label: str, conn: psycopg.Connection[Any]) -> dict[str, tuple[int, int]]:
    time.sleep(1.0)  # backends flush their table counters at most once a second
    stats = table_stats(conn, WATCHED)
    cells = ", ".join(f"{t} {live:,} live / {dead:,} dead" for t, (live, dead) in stats.items())
    print(f"  [{label}] {cells}")
    return stats


def settings(url: str) -> tuple[str, list[str]]:
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        autovacuum = str(conn.execute("SHOW autovacuum").fetchone()[0])  # type: ignore[index]
        rows = conn.execute(
            "SELECT relname, reloptions FROM pg_class WHERE relname = ANY(%s) ORDER BY relname",
            (list(QUEUE_TABLES),),
        ).fetchall()
    return autovacuum, [f"  {name}: {', '.join(opts or ['(defaults)'])}" for name, opts in rows]


def phase_line(r: ModeResult) -> str:
    return (
        f"{r.name:<22}{r.cycles:>8,}{r.rate:>10.1f}{pct(r.next_ms, 50):>9.1f}"
        f"{pct(r.next_ms, 99):>9.1f}{max(r.next_ms, default=float('nan')):>9.1f}"
        f"{r.empty:>7}  {r.non_2xx()}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the PostgreSQL")
    parser.add_argument("--entries", type=int, default=50_000, help="queue size")
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--before", type=float, default=30.0, help="seconds before the hold")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds the snapshot is held")
    parser.add_argument("--after", type=float, default=30.0, help="seconds after it commits")
    parser.add_argument("--pool-size", type=int, default=10, help="DB_POOL_SIZE per worker")
    parser.add_argument("--max-overflow", type=int, default=0, help="DB_MAX_OVERFLOW per worker")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    print(f"Load average at start: {load_average()} ({os.cpu_count()} CPUs)")
    store_url, replica_url, _ = build(args.server, args.entries, STORE_DB, REPLICA_DB)
    populate(store_url, replica_url, args.entries)
    tokens = create_agents(store_url, args.agents)
    maintain(store_url)
    autovacuum, reloptions = settings(store_url)
    print(f"autovacuum = {autovacuum}" + ("" if autovacuum == "on" else " (OFF on this server)"))
    print("Queue tables' storage and autovacuum parameters (pg_class.reloptions):")
    print("\n".join(reloptions))

    server: Server | None = None
    holder: psycopg.Connection[Any] | None = None
    monitor: psycopg.Connection[Any] | None = None
    prom_dir = tempfile.mkdtemp(prefix="cq-bench-held-")

    def cleanup() -> None:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.close()
        if holder is not None:
            with contextlib.suppress(Exception):
                holder.close()
        if server is not None:
            server.stop()
        shutil.rmtree(prom_dir, ignore_errors=True)

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    phases: list[ModeResult] = []
    boundaries: list[tuple[str, dict[str, tuple[int, int]]]] = []
    runner = asyncio.Runner(loop_factory=loop_factory())
    try:
        monitor = psycopg.connect(libpq_url(store_url), autocommit=True)
        server = start_server(
            store_url,
            replica_url,
            prom_dir,
            pool_size=args.pool_size,
            max_overflow=args.max_overflow,
        )
        print(
            f"Pools: DB_POOL_SIZE {args.pool_size} + DB_MAX_OVERFLOW {args.max_overflow} per"
            " worker, store and replica each, x2 workers (the server is shared: max_connections"
            " 100)"
        )
        print(f"Server on port {server.port}, workers {server.workers()}, {args.agents} agents")
        gen = LoadGenerator(server.base_url, agent_headers(store_url, tokens, "token"))
        runner.run(gen.warm_up())

        print("\nPhases (flat out, every agent back to back)")
        boundaries.append(("start", print_stats("start", monitor)))
        phases.append(runner.run(gen.flat_out(args.before, name="before")))
        boundaries.append(("before -> hold", print_stats("before -> hold", monitor)))

        holder = psycopg.connect(libpq_url(store_url), autocommit=True)
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        count = holder.execute(f"SELECT count(*) FROM {TABLE}").fetchone()[0]  # type: ignore[index]
        xmin = holder.execute("SELECT txid_snapshot_xmin(txid_current_snapshot())").fetchone()
        print(f"  snapshot taken: {TABLE} count(*) = {count:,}, xmin {xmin[0]}")  # type: ignore[index]
        phases.append(runner.run(gen.flat_out(args.hold, name="snapshot held")))
        held = print_stats("end of hold, before VACUUM", monitor)
        t0 = time.perf_counter()
        monitor.execute(f"VACUUM {', '.join(WATCHED)}")
        seconds = time.perf_counter() - t0
        after_vac = print_stats(f"VACUUM while held ({seconds:.1f} s)", monitor)
        removed = sum(held[t][1] - after_vac[t][1] for t in WATCHED)
        print(f"  VACUUM while the snapshot is held removed {removed:,} dead row versions")
        boundaries.append(("end of hold", held))
        holder.execute("COMMIT")
        holder.close()
        holder = None
        print("  snapshot committed")
        boundaries.append(("hold -> after", print_stats("hold -> after", monitor)))
        if autovacuum != "on":
            t0 = time.perf_counter()
            monitor.execute(f"VACUUM (ANALYZE) {', '.join(WATCHED)}")
            seconds = time.perf_counter() - t0
            label = f"manual VACUUM (ANALYZE), autovacuum off ({seconds:.1f} s)"
            boundaries.append(("after manual VACUUM", print_stats(label, monitor)))
        phases.append(runner.run(gen.flat_out(args.after, name="after")))
        boundaries.append(("end", print_stats("end", monitor)))
        handouts, log_lines = stop_load(runner, gen, server)
        server = None
    finally:
        with contextlib.suppress(Exception):
            runner.close()
        cleanup()
        server = None

    dup = duplicates(handouts)
    ledger = ledger_check(store_url)
    if not args.keep:
        drop_databases(args.server, (STORE_DB, REPLICA_DB))

    print("\n" + "=" * 100)
    print(
        f"SUMMARY  held snapshot: queue {args.entries:,} entries, {args.agents} agents, uvicorn x2,"
        f" phases {args.before:g} / {args.hold:g} / {args.after:g} s; autovacuum = {autovacuum}"
    )
    print(f"load average at end: {load_average()} ({os.cpu_count()} CPUs)")
    print("reloptions:")
    print("\n".join(reloptions))
    header = (
        f"{'phase':<22}{'cycles':>8}{'cycles/s':>10}{'nu p50':>9}{'nu p99':>9}{'max':>9}"
        f"{'204s':>7}  non-2xx / transport errors"
    )
    print(header)
    print("-" * len(header))
    for r in phases:
        print(phase_line(r))
    print("-" * len(header))
    print("dead tuples (n_live_tup / n_dead_tup) at each boundary:")
    for label, stats in boundaries:
        cells = ", ".join(f"{t} {live:,}/{dead:,}" for t, (live, dead) in stats.items())
        print(f"  {label:<22}{cells}")
    before, during, after = phases
    print(
        f"throughput while held: {during.rate / before.rate:.2f}x before; after:"
        f" {after.rate / before.rate:.2f}x before"
        if before.rate
        else "no throughput before the hold"
    )
    errors = sum(r.non_2xx() != "none" for r in phases)
    dup_total = duplicate_total(dup, ledger)
    print("agents: " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in dup.items()))
    print("ledger: " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in ledger.items()))
    print(f"duplicates: {dup_total} ({'OK' if dup_total == 0 else 'FAILED'})")
    ok = during.cycles > 0 and during.non_2xx() == "none"
    print(f"claims kept succeeding while the snapshot was held: {'yes' if ok else 'NO'}")
    print(f"phases with errors: {errors}")
    print("\n".join(log_lines))
    print(f"total benchmark time {time.perf_counter() - started:.0f} s")
    return 0 if ok and dup_total == 0 and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
