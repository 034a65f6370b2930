"""What the attempt caps cost the population's candidate query (issue 14): EXPLAIN ANALYZE on a
realistic store, with and without the caps.

Run it from the repository root against the machine's PostgreSQL::

    .venv/bin/python -m bench.caps_plan            # builds the store (~2 min), then measures
    .venv/bin/python -m bench.caps_plan --reuse    # measures the store built before

The store (``--db``, default ``cq_bench_caps``, dropped with ``--drop``) is migrated with Alembic
and holds the population benchmark's 1,000,000 score rows (bench/populate.py's SCORES_SQL) and a
ledger of ``--ledger`` hand-outs (default 2,000,000: months of a busy floor), 95% completed,
finished over the last 90 days, most users called a few times and some many; on top, users at
the daily cap (3 completions in the last hours) and at the weekly cap (10 over six days), so the
caps really exclude candidates. No replica is needed: the candidate query reads the store only.

It streams the unsigned queue's candidates as the population's walk does (a server-side cursor,
batches of 2,000): the first 135 (what a limit of 100 reads) and the first 125,010 (a limit of
100,000), ``--runs`` times each with and without ``attempt_caps``, with JIT on and off, and prints
the medians, the plan of the first batch, and how many candidates the caps leave out.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from alembic import command
from sqlalchemy import Engine, create_engine, text

from app.health import alembic_config
from app.queues.kinds import CANDIDATES_SQL
from app.rules.caps import DAY_PARAM, WEEK_PARAM
from bench.harness.db import (
    DEFAULT_SERVER,
    database_exists,
    db_url,
    maintain,
    recreate_database,
    step,
)
from bench.populate import COOLING_MINUTES, SCORES_SQL

CAPS = {DAY_PARAM: 3, WEEK_PARAM: 10, "live_leases_only": True}

# The raw-SQL baseline: the same candidates without the attempt caps, written out here.
WITHOUT_CAPS = """
    SELECT s.user_id, s.current_score, s.created_at
      FROM user_call_scores s
     WHERE s.current_queue_type = :queue_type AND s.is_active
       AND (s.next_call_after IS NULL OR s.next_call_after <= now())
       AND s.created_at <= now() - make_interval(mins => :cooling)
       AND NOT EXISTS (SELECT 1 FROM assignments a
                        WHERE a.user_id = s.user_id AND a.status = 'active'
                          AND a.lease_expires_at > now())
     ORDER BY s.current_score, s.created_at DESC, s.user_id
"""


def candidates(caps: bool) -> str:
    return CANDIDATES_SQL if caps else WITHOUT_CAPS


AT_DAILY_CAP = 3000
AT_WEEKLY_CAP = 2000

LEDGER_SQL = """
INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score, status,
                         assigned_at, lease_expires_at, finished_at, outcome)
SELECT 1 + g % 40,
       -- skewed: some users are called far more often than others
       1 + floor(1000000 * power(((g * 2654435761) % 1000003) / 1000003.0, 2))::int,
       CASE WHEN g % 2 = 0 THEN 'unsigned_users' ELSE 'outstanding_requests' END,
       'queue', 0,
       CASE WHEN g % 20 = 0 THEN 'released' ELSE 'completed' END,
       f - interval '6 minutes', f + interval '9 minutes', f,
       CASE WHEN g % 20 = 0 THEN NULL ELSE 'no_answer' END
  FROM generate_series(1::bigint, :n) g,
       LATERAL (SELECT now() - make_interval(secs => ((g * 40503) % 7776000)::int) AS f) t
"""
# Users at the caps: the first AT_DAILY_CAP ids of each kind get three completions in the last
# hours; the next AT_WEEKLY_CAP ten over six days (two a day at most: under the daily cap).
CAPPED_SQL = """
INSERT INTO assignments (agent_id, user_id, queue_type, source, priority_score, status,
                         assigned_at, lease_expires_at, finished_at, outcome)
SELECT 1, u, 'unsigned_users', 'queue', 0, 'completed', f - interval '6 minutes',
       f + interval '9 minutes', f, 'no_answer'
  FROM (SELECT user_id AS u, row_number() OVER (ORDER BY current_score, user_id) AS r
          FROM user_call_scores WHERE is_active AND current_queue_type IS NOT NULL) c,
       LATERAL (SELECT now() - make_interval(hours => k) AS f FROM generate_series(1, 3) k
                 WHERE c.r <= :daily
                UNION ALL
                SELECT now() - make_interval(hours => 3 + 14 * k) FROM generate_series(0, 9) k
                 WHERE c.r > :daily AND c.r <= :daily + :weekly) t
 WHERE c.r <= :daily + :weekly
"""


def build(server: str, name: str, ledger: int) -> str:
    url = recreate_database(server, name)
    with step("alembic upgrade head"):
        command.upgrade(alembic_config(url), "head")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        with step("1,000,000 score rows"):
            conn.execute(text(SCORES_SQL), {"rows": 1_000_000})
        conn.execute(
            text(
                "INSERT INTO agents (name, display_name, role)"
                " SELECT 'bench-' || g, 'bench-' || g, 'agent' FROM generate_series(1, 40) g"
            )
        )
        with step(f"{ledger:,} ledger rows"):
            conn.execute(text(LEDGER_SQL), {"n": ledger})
        with step("users at the caps"):
            conn.execute(text(CAPPED_SQL), {"daily": AT_DAILY_CAP, "weekly": AT_WEEKLY_CAP})
    engine.dispose()
    with step("VACUUM ANALYZE"):
        maintain(url, checkpoint=False)
    return url


def walk(engine: Engine, caps: bool, jit: bool, rows: int) -> float:
    """Milliseconds to stream the first ``rows`` candidates as the population's walk does (a
    server-side cursor, batches of 2,000), with or without the caps and JIT."""
    params = {"queue_type": "unsigned_users", "cooling": COOLING_MINUTES, **CAPS}
    with engine.connect() as conn:
        conn.execute(text(f"SET jit = {'on' if jit else 'off'}"))
        streamed = conn.execution_options(stream_results=True, max_row_buffer=5000)
        started = time.perf_counter()
        result = streamed.execute(text(candidates(caps)), params)
        got = 0
        while got < rows:
            batch = result.fetchmany(min(2000, rows - got))
            if not batch:
                break
            got += len(batch)
        elapsed = (time.perf_counter() - started) * 1000
        result.close()
        conn.rollback()
    return elapsed


def plan(engine: Engine, rows: int) -> str:
    params = {"queue_type": "unsigned_users", "cooling": COOLING_MINUTES, **CAPS}
    sql = candidates(True) + f" LIMIT {rows}"
    with engine.connect() as conn:
        conn.execute(text("SET jit = off"))
        return "\n".join(
            conn.execute(text("EXPLAIN (ANALYZE, BUFFERS, TIMING OFF) " + sql), params).scalars()
        )


def describe(engine: Engine) -> None:
    with engine.connect() as conn:
        figures = conn.execute(
            text(
                "SELECT (SELECT count(*) FROM assignments) AS ledger,"
                " (SELECT count(*) FROM assignments WHERE status = 'completed'"
                "   AND finished_at > now() - interval '168 hours') AS week,"
                " (SELECT count(*) FROM assignments WHERE status = 'completed'"
                "   AND finished_at > now() - interval '24 hours') AS day,"
                " pg_size_pretty(pg_relation_size('ix_assignments_completed_user_id_finished_at'))"
                "   AS index_size"
            )
        ).one()
    print(
        f"Ledger {figures.ledger:,} rows; completed in the last 7 days {figures.week:,}, in the"
        f" last 24 hours {figures.day:,}; the caps' partial index {figures.index_size}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER)
    parser.add_argument("--db", default="cq_bench_caps")
    parser.add_argument("--ledger", type=int, default=2_000_000)
    parser.add_argument("--reuse", action="store_true", help="measure the store built before")
    parser.add_argument("--drop", action="store_true", help="drop the store at the end")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    if args.reuse and database_exists(args.server, args.db):
        url = db_url(args.server, args.db)
    else:
        print(f"Building {args.db}")
        url = build(args.server, args.db, args.ledger)
    engine = create_engine(url)
    describe(engine)
    try:
        print(f"load average at the start: {os.getloadavg()[0]:.1f}")
        for rows in (135, 125_010):
            for jit in (True, False):
                figures = {}
                for caps in (False, True):
                    runs = [walk(engine, caps, jit, rows) for _ in range(args.runs)]
                    figures[caps] = (statistics.median(runs), runs)
                without, with_caps = figures[False][0], figures[True][0]
                print(
                    f"unsigned_users, first {rows:,} candidates, JIT {'on' if jit else 'off'}:"
                    f" without caps {without:.1f} ms, with caps {with_caps:.1f} ms"
                    f" (+{with_caps - without:.1f} ms, {(with_caps - without) / rows * 1000:.1f}"
                    f" us a candidate); runs with caps {[round(t) for t in figures[True][1]]}"
                )
        print("\nPlan of the first 135 candidates with the caps (JIT off):")
        print(plan(engine, 135))
        with engine.connect() as conn:
            for caps in (False, True):
                n = conn.execute(
                    text("SELECT count(*) FROM (" + candidates(caps) + ") c"),
                    {"queue_type": "unsigned_users", "cooling": COOLING_MINUTES, **CAPS},
                ).scalar_one()
                print(f"unsigned_users candidates {'with' if caps else 'without'} caps: {n:,}")
        print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    finally:
        engine.dispose()
        if args.drop:
            admin = create_engine(args.server, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{args.db}" WITH (FORCE)'))
            admin.dispose()
    print(f"\n{time.perf_counter() - started:.0f} s in all")


if __name__ == "__main__":
    main()
