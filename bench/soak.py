"""Soak (issue 5, item 7): 64 agents for 10 minutes on 1,000,000 scores, a refresh every 30 s.

Run it from the repository root against the machine's PostgreSQL::

    .venv/bin/python -m bench.soak                        # 1,000,000 rows, 10 minutes
    .venv/bin/python -m bench.soak --minutes 3            # shorter
    .venv/bin/python -m bench.soak --minutes 3 --keep     # keep the databases for --reuse
    .venv/bin/python -m bench.soak --minutes 3 --reuse    # reset the kept rows' state, no rebuild
    .venv/bin/python -m bench.soak --rows 200000 --minutes 1

The data is ``bench/populate.py``'s (``build``/``reset``, into ``cq_bench_soak_store`` and
``cq_bench_soak_replica``): ``--rows`` score rows, 45% unsigned, 40% outstanding, 15% in no
queue, with their users, claims and requirements in the replica. The service is started as the
claims benchmarks start it (``bench/harness/server.py``: ``uvicorn app.main:app --workers 2``,
scheduler off) with ``QUEUE_SIZE_LIMIT`` = ``--limit`` (100,000), and driven by their load
generator (``bench/harness/load.py``): ``--agents`` (64) agents back to back, ``next-user`` on
``unsigned_users`` then ``complete``.

Order: populations through ``GET /api/cron/populate-separated-queues`` (the cron secret as the
bearer token) until every worker has run one, the agents' first cycle, and rounds of ``--warmup``
seconds (60) of the soak's own load, refreshes included, until every worker's memory has taken
the step of its first population beside the claim load (at most four rounds), then the memory at
start; then ``--minutes`` flat out while a
thread calls the population route every ``--refresh`` seconds (30; one that takes longer is
followed at once; a 409, population already running, counts as skipped, not as an error) and
samples the workers' memory. The workers run with ``MALLOC_ARENA_MAX=2``, as ``callqueue serve``
and the Docker image run them. At the end it prints total cycles, agents' errors by
status, refreshes by outcome, duplicates seen from the agents' side (a user held by two agents at
overlapping times, an assignment id handed out twice, a user handed out more than once) and in
the ledger, the memory of the uvicorn workers (sum of ``VmRSS`` from ``/proc/<pid>/status``) at
start and end and its growth, and ``n_live_tup``/``n_dead_tup`` of the queue tables and
``assignments``. Targets: no errors, no duplicates, memory growth under 10%.
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
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg

from bench import populate as data
from bench.harness.accounting import load_average
from bench.harness.checks import duplicate_total, duplicates, ledger_check
from bench.harness.db import (
    DEFAULT_SERVER,
    admin,
    database_exists,
    drop_databases,
    libpq_url,
    table_stats,
)
from bench.harness.load import LoadGenerator, loop_factory, pct, stop_load
from bench.harness.seed import agent_headers, create_agents
from bench.harness.server import Server, populate_over_http, start_server

STORE_DB = "cq_bench_soak_store"
REPLICA_DB = "cq_bench_soak_replica"
WATCHED = ("unsigned_users_queue", "outstanding_requests_queue", "assignments")
MAX_WARM_POPULATIONS = 6
WORKER_STEP_KIB = 20 * 1024  # a worker's one-time growth after its first large population
LOADED_STEP_KIB = 5 * 1024  # and after its first one beside the claim load
MAX_WARM_ROUNDS = 4
TARGET_GROWTH = 10.0


def rss_kib(pids: list[int]) -> int:
    """Sum of VmRSS (kB) of the given processes."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def refresh(base_url: str) -> tuple[int, float, str]:
    """One population through the cron route: (status, seconds, short description)."""
    call = populate_over_http(base_url)
    return call.status, call.seconds, call.describe()


def per_worker(pids: list[int]) -> str:
    return " + ".join(f"{rss_kib([pid]) / 1024:.0f}" for pid in pids)


def db_cells(stats: dict[str, tuple[int, int]]) -> str:
    return ", ".join(f"{t} {live:,} live / {dead:,} dead" for t, (live, dead) in stats.items())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the PostgreSQL")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rows", type=int, default=1_000_000, help="score rows")
    parser.add_argument("--limit", type=int, default=100_000, help="QUEUE_SIZE_LIMIT")
    parser.add_argument("--refresh", type=float, default=30.0, help="seconds between refreshes")
    parser.add_argument(
        "--warmup", type=float, default=60.0, help="seconds per warm-up round, not counted"
    )
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=10, help="DB_POOL_SIZE per worker")
    parser.add_argument("--max-overflow", type=int, default=0, help="DB_MAX_OVERFLOW per worker")
    parser.add_argument(
        "--reuse", action="store_true", help="reset the databases kept by an earlier --keep"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_start = load_average()
    print(f"Load average at start: {load_start} ({os.cpu_count()} CPUs)")
    if args.reuse and not database_exists(args.server, STORE_DB):
        print(f"--reuse: {STORE_DB} does not exist (run with --keep first); building it")
        args.reuse = False
    if args.reuse:
        store_url, replica_url = data.reset(args.server, args.rows, STORE_DB, REPLICA_DB)
        admin(store_url, ["TRUNCATE agents CASCADE", "VACUUM (ANALYZE)"])
    else:
        store_url, replica_url = data.build(args.server, args.rows, STORE_DB, REPLICA_DB)
    tokens = create_agents(store_url, args.agents)

    server: Server | None = None
    monitor: psycopg.Connection[Any] | None = None
    prom_dir = tempfile.mkdtemp(prefix="cq-bench-soak-")

    def cleanup() -> None:
        if monitor is not None:
            with contextlib.suppress(Exception):
                monitor.close()
        if server is not None:
            server.stop()
        shutil.rmtree(prom_dir, ignore_errors=True)

    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    refreshes: Counter[str] = Counter()
    refresh_log: list[str] = []
    rss_samples: list[tuple[float, int]] = []
    seconds = args.minutes * 60
    runner = asyncio.Runner(loop_factory=loop_factory())
    try:
        monitor = psycopg.connect(libpq_url(store_url), autocommit=True)
        server = start_server(
            store_url,
            replica_url,
            prom_dir,
            pool_size=args.pool_size,
            max_overflow=args.max_overflow,
            extra_env={"QUEUE_SIZE_LIMIT": str(args.limit)},
        )
        print(
            f"Pools: DB_POOL_SIZE {args.pool_size} + DB_MAX_OVERFLOW {args.max_overflow} per"
            " worker, store and replica each, x2 workers (the server is shared: max_connections"
            " 100)"
        )
        workers = server.workers()
        print(f"Server on port {server.port}, workers {workers}, QUEUE_SIZE_LIMIT {args.limit:,}")
        # A worker's memory steps up once, the first time it runs a large population, then stays
        # flat. The kernel picks which worker serves each refresh, so the starting figure is
        # taken only after every worker has had its step (or after a bounded number of tries):
        # otherwise the growth measured depends on luck, not on the service.
        before = {pid: rss_kib([pid]) for pid in workers}
        for attempt in range(1, MAX_WARM_POPULATIONS + 1):
            status, took, what = refresh(server.base_url)
            print(f"  population {attempt}: {status} in {took:.1f} s: {what}")
            if status != 200:
                raise SystemExit("a warm-up population failed")
            grown = [rss_kib([pid]) - before[pid] >= WORKER_STEP_KIB for pid in workers]
            if all(grown):
                break
        print(f"  every worker has populated once: {all(grown)} ({per_worker(workers)} MiB)")
        gen = LoadGenerator(server.base_url, agent_headers(store_url, tokens, "token"))
        base_url = server.base_url

        def refresher(t0: float, until: float, log: list[str] | None) -> None:
            """A population through the cron route every --refresh seconds until ``until``."""
            tick = t0 + args.refresh
            while tick < until:
                time.sleep(max(0.0, tick - time.perf_counter()))
                status, took, what = refresh(base_url)
                rss = rss_kib(workers)
                line = (
                    f"  t={time.perf_counter() - t0:6.0f} s refresh {status} in {took:5.1f} s"
                    f" ({what}); RSS {rss / 1024:.1f} MiB ({per_worker(workers)})"
                )
                print(line, flush=True)
                if log is not None:
                    key = {200: "ok", 409: "skipped (409)"}.get(status, f"error {status}")
                    refreshes[key] += 1
                    rss_samples.append((time.perf_counter() - t0, rss))
                    log.append(line)
                # A refresh that outlasts the interval is followed at once, not by a burst of
                # the missed ones.
                tick = max(tick + args.refresh, time.perf_counter())

        def loaded(seconds: float, name: str, log: list[str] | None) -> Any:
            """Every agent flat out for ``seconds`` while the refresher runs beside them."""
            t0 = time.perf_counter()
            thread = threading.Thread(target=refresher, args=(t0, t0 + seconds, log), daemon=True)
            thread.start()
            result = runner.run(gen.flat_out(seconds, name=name))
            thread.join()
            return result

        runner.run(gen.warm_up())
        # A worker's memory steps up the first time it populates beside the claim load (the
        # threads of both touch its allocator at once), then only creeps. The kernel picks the
        # worker that serves each refresh, so the warm-up is the soak's own load, refreshes
        # included, in rounds of --warmup seconds until every worker has taken its step (or
        # MAX_WARM_ROUNDS); the starting figure is taken after it.
        loaded_from = {pid: rss_kib([pid]) for pid in workers}
        for round_ in range(1, MAX_WARM_ROUNDS + 1):
            warm = loaded(args.warmup, "warm-up", None)
            stepped = [rss_kib([pid]) - loaded_from[pid] >= LOADED_STEP_KIB for pid in workers]
            print(
                f"  warm-up round {round_}: {warm.cycles:,} cycles in {args.warmup:g} s,"
                f" {warm.non_2xx()}; every worker has populated under load: {all(stepped)}"
            )
            if all(stepped):
                break
        rss_start = rss_kib(workers)
        workers_start = per_worker(workers)
        print(
            f"  workers' RSS at start (after warm-up): {rss_start / 1024:.1f} MiB"
            f" ({workers_start} MiB)"
        )
        dead_start = table_stats(monitor, WATCHED)
        print(f"  at start: {db_cells(dead_start)}")

        print(f"\nSoak: {args.minutes:g} min flat out, refresh every {args.refresh:g} s")
        soak = loaded(seconds, "soak", refresh_log)
        rss_end = rss_kib(workers)
        workers_end = per_worker(workers)
        time.sleep(1.0)
        dead_end = table_stats(monitor, WATCHED)
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

    growth = 100.0 * (rss_end - rss_start) / rss_start if rss_start else float("nan")
    errors = {k: v for k, v in soak.statuses.items() if not k.split()[-1].startswith("2")}
    errors.update({f"transport {k}": v for k, v in soak.errors.items()})
    refresh_errors = sum(v for k, v in refreshes.items() if k.startswith("error"))
    dup_total = duplicate_total(dup, ledger)
    print("\n" + "=" * 100)
    print(
        f"SUMMARY  soak: {args.rows:,} score rows, QUEUE_SIZE_LIMIT {args.limit:,},"
        f" {args.agents} agents, uvicorn x2, {args.minutes:g} min, refresh every {args.refresh:g} s"
    )
    print(f"load average: start {load_start}, end {load_average()} ({os.cpu_count()} CPUs)")
    print(
        f"cycles: {soak.cycles:,} ({soak.rate:.1f}/s); next-user p50 {pct(soak.next_ms, 50):.1f}"
        f" ms, p99 {pct(soak.next_ms, 99):.1f} ms, max {max(soak.next_ms, default=0):.1f} ms;"
        f" 204 (queue empty): {soak.empty:,}"
    )
    print(
        "errors by status: "
        + (", ".join(f"{k}: {v:,}" for k, v in sorted(errors.items())) or "none")
    )
    for key, sample in soak.samples.items():
        print(f"  first {key}: {sample}")
    print("refreshes: " + (", ".join(f"{k} {v}" for k, v in sorted(refreshes.items())) or "none"))
    print("agents: " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in dup.items()))
    print("ledger: " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in ledger.items()))
    print(f"duplicates: {dup_total} ({'OK' if dup_total == 0 else 'FAILED'})")
    print(
        f"workers' RSS: start {rss_start / 1024:.1f} MiB, end {rss_end / 1024:.1f} MiB, growth"
        f" {growth:+.1f}% (target < {TARGET_GROWTH:g}%:"
        f" {'met' if growth < TARGET_GROWTH else 'MISSED'}); per worker {workers_start} ->"
        f" {workers_end} MiB"
    )
    if rss_samples:
        trend = ", ".join(f"{at:.0f}s {kib / 1024:.0f}" for at, kib in rss_samples)
        print(f"  RSS at each refresh (MiB): {trend}")
    print(f"dead tuples at start: {db_cells(dead_start)}")
    print(f"dead tuples at end:   {db_cells(dead_end)}")
    print("\n".join(log_lines))
    print(f"total time {time.perf_counter() - started:.0f} s")
    ok = not errors and refresh_errors == 0 and dup_total == 0 and growth < TARGET_GROWTH
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
