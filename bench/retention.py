"""Retention beside the claims: how long deleting a million expired ledger rows takes, and what
it costs the agents' next-user latency while it runs.

Run it from the repository root against the machine's PostgreSQL::

    .venv/bin/python -m bench.retention                 # 1,000,000 expired rows, 100,000 entries
    .venv/bin/python -m bench.retention --quick         # 100,000 expired rows, 10,000 entries
    .venv/bin/python -m bench.retention --expired 2000000 --rate 100

The claims benchmark's set-up (``bench/harness/``: databases, one population, 64 agents, the
two-worker server, the usual month of ledger history), plus ``--expired`` finished assignments
(with notes) spread over the year that ended ``RETENTION_LEDGER_DAYS`` (2,190) days ago, one in
fifty with a finished callback. One paced run at ``--rate`` (50) cycles/s (next-user, then
complete with ``no_answer``): ``--steady-seconds`` (30; 10 with ``--quick``) of steady state,
then ``callqueue retention run`` as the daily job would run it (its own process, the default
settings: the notes pass, the days' compliance figures kept, the deletes in batches of 5,000),
then ``--gap-seconds`` (5) after it. It prints the run's figures, next-user p50/p99/max for
requests sent in steady state and while retention ran, the ratio of the two p99s against the
target (within 2x), and, after the server has stopped, the raw floor: the same rows inserted
again and deleted by one ``DELETE`` statement, with nothing kept first and nothing batched.
Exit status 1 when a promise was broken (a non-2xx answer, a duplicate, a failed run or rows
left behind), not for a missed latency target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.harness.checks import duplicate_total
from bench.harness.db import libpq_url
from bench.harness.load import ModeResult, pct
from bench.harness.report import print_duplicate_verdict
from bench.harness.seed import QUEUE
from bench.harness.server import server_env
from bench.harness.session import ClaimsBench, add_arguments

TARGET_RATIO = 2.0
SETTLE_SECONDS = 5.0
LEDGER_DAYS = 2190

# Finished assignments (with notes) over the year before the ledger's limit, and their callbacks.
EXPIRED_SQL = f"""
INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score, status,
                         assigned_at, lease_expires_at, finished_at, outcome, notes, created_at,
                         updated_at)
SELECT %(agent)s, 1 + (g::bigint * 7919) %% %(users)s, '{QUEUE}', 'queue', 25, 'completed',
       t,
       t + interval '15 minutes', t + interval '3 minutes', 'no_answer',
       'asked to be called after six', t, t + interval '3 minutes'
  FROM generate_series(1, %(n)s) AS g,
       LATERAL (SELECT now() - make_interval(days => {LEDGER_DAYS + 1})
                       - make_interval(secs => g * 31536000.0 / %(n)s)) AS at(t)
"""
EXPIRED_CALLBACKS_SQL = f"""
INSERT INTO callbacks (user_id, queue_type, due_at, owner_agent_id, status, first_handed_out_at,
                       finished_at, created_at, updated_at)
SELECT 1 + (g::bigint * 104729) %% %(users)s, '{QUEUE}', t, %(agent)s, 'completed', t,
       t + interval '3 minutes', t - interval '1 day', t + interval '3 minutes'
  FROM generate_series(1, %(n)s / 50) AS g,
       LATERAL (SELECT now() - make_interval(days => {LEDGER_DAYS + 1})
                       - make_interval(secs => g * 50 * 31536000.0 / %(n)s)) AS at(t)
"""
EXPIRED_COUNT = (
    "SELECT count(*) FROM assignments"
    f" WHERE finished_at < now() - make_interval(days => {LEDGER_DAYS})"
)


def add_expired(store_url: str, users: int, n: int) -> float:
    """The expired rows, written and analysed; seconds it took."""
    started = time.perf_counter()
    with psycopg.connect(libpq_url(store_url), autocommit=True) as conn:
        agent = conn.execute("SELECT id FROM agents WHERE name = 'bench-history'").fetchone()
        assert agent is not None
        params = {"agent": agent[0], "users": users, "n": n}
        with conn.transaction():
            conn.execute("SET LOCAL synchronous_commit = off")
            conn.execute(EXPIRED_SQL, params)
            conn.execute(EXPIRED_CALLBACKS_SQL, params)
        conn.execute("VACUUM ANALYZE assignments")
        conn.execute("VACUUM ANALYZE callbacks")
    return time.perf_counter() - started


def raw_floor(store_url: str, users: int, n: int) -> tuple[float, int]:
    """The same rows again, deleted by one statement: (seconds, rows)."""
    add_expired(store_url, users, n)
    with psycopg.connect(libpq_url(store_url), autocommit=True) as conn:
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        cur = conn.execute(
            "DELETE FROM assignments WHERE status <> 'active'"
            f" AND finished_at < now() - make_interval(days => {LEDGER_DAYS})"
        )
        return time.perf_counter() - started, cur.rowcount


def retention_process(env: dict[str, str]) -> tuple[float, dict[str, Any], str]:
    """``callqueue retention run`` in its own process: (seconds, its JSON report, stderr)."""
    command = [str(Path(sys.executable).parent / "callqueue"), "retention", "run"]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return seconds, {"error": f"exit {done.returncode}"}, done.stderr[-2000:]
    return seconds, json.loads(done.stdout), ""


def split(result: ModeResult, start: float, end: float) -> dict[str, list[float]]:
    """next-user latencies by when each request was sent: before retention, while it ran."""
    out: dict[str, list[float]] = {"steady": [], "during": [], "after": []}
    for route, sent, ms, _status in result.requests:
        if route != "next-user":
            continue
        key = "steady" if sent < start else "during" if sent <= end else "after"
        out[key].append(ms)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser, "10,000 entries, 100,000 expired rows, a 10 s steady window")
    parser.add_argument("--expired", type=int, default=None, help="expired rows (1,000,000)")
    parser.add_argument("--rate", type=float, default=50.0, help="paced cycles/s (50)")
    parser.add_argument("--steady-seconds", type=float, default=None, help="before (30)")
    parser.add_argument("--gap-seconds", type=float, default=5.0, help="after retention (5)")
    args = parser.parse_args(argv)
    expired = args.expired or (100_000 if args.quick else 1_000_000)
    steady_seconds = args.steady_seconds or (10.0 if args.quick else 30.0)

    bench = ClaimsBench(args)
    bench.prepare()
    took = add_expired(bench.store_url, bench.users, expired)
    print(f"  {expired:,} expired ledger rows (and {expired // 50:,} callbacks) in {took:.1f} s")
    bench.settle(baseline_follows=False)
    env = server_env(
        bench.store_url, bench.replica_url, args.pool_size, args.max_overflow, bench.prom_dir
    )
    env["RETENTION_LEDGER_DAYS"] = str(LEDGER_DAYS)
    window: dict[str, Any] = {}
    with bench.serving() as gen:
        print(
            f"\nPaced at {args.rate:g} cycles/s: {steady_seconds:g} s steady, then `callqueue"
            f" retention run` (its own process) under the same load, then {args.gap_seconds:g} s"
        )
        settle = bench.run(gen.fixed_rate(args.rate, SETTLE_SECONDS, "settle"))
        print(f"  settle: {settle.cycles:,} cycles, not counted ({settle.non_2xx()} non-2xx)")

        def schedule() -> None:
            time.sleep(steady_seconds)
            window["start"] = time.perf_counter()
            window["seconds"], window["report"], window["stderr"] = retention_process(env)
            window["end"] = time.perf_counter()
            print(f"    retention: {window['seconds']:.1f} s: {window['report']}", flush=True)
            time.sleep(args.gap_seconds)

        run = bench.measured(lambda: gen.paced(args.rate, schedule, f"{args.rate:g}/s, retention"))
    dup, ledger = bench.check_duplicates()
    with psycopg.connect(libpq_url(bench.store_url)) as conn:
        row = conn.execute(EXPIRED_COUNT).fetchone()
        left = row[0] if row else -1
    print(f"\nRaw floor: the {expired:,} rows inserted again, then one DELETE statement")
    floor_s, floor_rows = raw_floor(bench.store_url, bench.users, expired)
    print(f"  {floor_rows:,} rows in {floor_s:.1f} s")
    bench.finish()

    report = window.get("report", {})
    deleted = report.get("deleted", {})
    by = split(run, window.get("start", float("inf")), window.get("end", float("inf")))
    bench.summary_head("retention: ")
    print(
        f"retention (`callqueue retention run`, own process): {window.get('seconds', 0):.1f} s;"
        f" days kept {report.get('days_kept')}, notes cleared {report.get('notes_cleared')},"
        f" deleted {deleted}"
    )
    gone = deleted.get("assignments", 0)
    seconds = window.get("seconds", 0) or float("nan")
    print(
        f"  {gone:,} ledger rows deleted = {gone / seconds:,.0f} rows/s; raw floor (one DELETE,"
        f" nothing kept, nothing batched): {floor_rows:,} rows in {floor_s:.1f} s ="
        f" {floor_rows / floor_s:,.0f} rows/s"
    )
    print(f"{'next-user requests sent':<32}{'claims':>8}{'p50':>8}{'p99':>8}{'max':>8}")
    for key, name in (("steady", "steady"), ("during", "while retention ran"), ("after", "after")):
        values = by[key]
        print(
            f"{name:<32}{len(values):>8,}{pct(values, 50):>8.1f}{pct(values, 99):>8.1f}"
            f"{max(values, default=float('nan')):>8.1f}"
        )
    p99_steady, p99_during = pct(by["steady"], 99), pct(by["during"], 99)
    ratio = p99_during / p99_steady if p99_steady else float("nan")
    print(
        f"p99 next-user while retention ran {p99_during:.1f} ms / steady {p99_steady:.1f} ms ="
        f" x{ratio:.2f}; target within {TARGET_RATIO:g}x:"
        f" {'met' if ratio <= TARGET_RATIO else 'MISSED'}"
    )
    errors = sum(run.errors.values()) + sum(
        n for status, n in run.statuses.items() if not status.split()[-1].startswith("2")
    )
    print(f"non-2xx answers and transport errors: {run.non_2xx()}; expired rows left: {left}")
    dups = duplicate_total(dup, ledger)
    print_duplicate_verdict(dups)
    print(bench.elapsed())
    if window.get("stderr"):
        print(window["stderr"], file=sys.stderr)
    broken = errors or dups or left != 0 or "error" in report
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
