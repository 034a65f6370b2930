"""The compliance report over a ledger of ten million rows: a month and a year, in seconds,
beside a raw SQL floor.

Run it from the repository root against the machine's PostgreSQL::

    .venv/bin/python -m bench.compliance              # builds a 10,000,000-row ledger, measures
    .venv/bin/python -m bench.compliance --reuse      # the ledger built before (or by
                                                      # bench.claims --ledger-rows N --keep)
    .venv/bin/python -m bench.compliance --ledger-rows 1000000 --runs 5

The store is the claims benchmark's (``bench/harness/seed.py``: 10,000 queue entries, and
``--ledger-rows`` finished hand-outs spread over the year that ended 8 days ago, one in fifty
with a callback), with no server: the report is computed in this process as the API computes it
(``app.rules.compliance.compliance_report``: every hand-out of the period with its attempt-cap
look-back, the refusals, the callbacks, judged against the calling rules of their moment). The
periods end 8 days ago, where the history ends: the last 30 days of it, and its last 366 (the
report's longest). Each is run ``--runs`` (3) times, the median and the best printed: first
counted from the ledger (no day kept yet, as on the day of an upgrade), then after the daily
retention run has kept every final day's figures (timed), as the report runs every day after.

The raw floor, for each period: one SQL statement counting the period's hand-outs per local day
(the rows the report must read, read once, nothing judged), and the report's own hand-out
statement with its attempt-cap look-back, fetched and discarded (the database's share of the
report, without the Python that judges each row).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import date, timedelta
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, text

from app.config import Settings
from app.privacy.retention import Retention
from app.rules.compliance import HandOuts, compliance_report
from bench.harness.db import DEFAULT_SERVER, database_exists, db_url, drop_databases, libpq_url
from bench.harness.seed import REPLICA_DB, STORE_DB, build

ZONE = "Europe/London"
HANDOUTS = HandOuts.SQL.replace(":start", "%(start)s").replace(":end", "%(end)s")
PER_DAY = """
    SELECT (assigned_at AT TIME ZONE %(zone)s)::date AS day, count(*)
      FROM assignments WHERE assigned_at >= %(start)s AND assigned_at < %(end)s
     GROUP BY 1
"""


def timed(fn: Callable[[], object], runs: int) -> tuple[float, float]:
    """(median, best) seconds of ``runs`` calls."""
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), min(seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the PostgreSQL")
    parser.add_argument("--ledger-rows", type=int, default=10_000_000)
    parser.add_argument("--reuse", action="store_true", help="measure the store built before")
    parser.add_argument("--keep", action="store_true", help="keep the store afterwards")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)

    if args.reuse and database_exists(args.server, STORE_DB):
        store_url = db_url(args.server, STORE_DB)
        print(f"Reusing {STORE_DB}")
    else:
        store_url, _, _ = build(args.server, 10_000, ledger_rows=args.ledger_rows)
    settings = Settings(
        database_url=store_url,
        app_env="test",
        calling_timezone=ZONE,
        max_attempts_per_day=3,
        max_attempts_per_week=10,
        retention_ledger_days=0,
    )
    engine = create_engine(settings.require_database())
    with engine.begin() as conn:
        rows, newest = conn.execute(
            text("SELECT count(*), max(finished_at) FROM assignments")
        ).one()
        conn.execute(text("TRUNCATE compliance_days"))
    print(f"ledger: {rows:,} rows, the newest finished {newest:%Y-%m-%d %H:%M} UTC")
    last = date.today() - timedelta(days=8)
    periods = {"a month (30 days)": 30, "a year (366 days)": 366}
    measure(engine, settings, store_url, periods, last, args.runs, "counted from the ledger")
    started = time.perf_counter()
    kept = Retention(engine, settings).run().days_kept
    print(
        f"\nthe daily retention run kept {kept:,} days' figures in"
        f" {time.perf_counter() - started:.1f} s (once; each later run keeps one day)"
    )
    measure(engine, settings, store_url, periods, last, args.runs, "with the days kept")
    engine.dispose()
    print(
        f"\nreport: compliance_report() as the API runs it (median and best of {args.runs});"
        " floor: per day = one GROUP BY over the period's hand-outs; hand-outs = the report's"
        " own hand-out statement with its cap look-back, fetched raw"
    )
    if not args.keep and not args.reuse:
        drop_databases(args.server, (STORE_DB, REPLICA_DB))
    return 0


def measure(
    engine: Engine,
    settings: Settings,
    store_url: str,
    periods: dict[str, int],
    last: date,
    runs: int,
    title: str,
) -> None:
    print(
        f"\n{title:<26}{'hand-outs':>12}{'report med':>12}{'best':>8}"
        f"{'floor: per day':>16}{'floor: hand-outs':>18}"
    )
    with psycopg.connect(libpq_url(store_url), autocommit=True) as raw:
        for name, days in periods.items():
            first = last - timedelta(days=days - 1)

            answers: list[dict[str, Any]] = []

            def report(first: date = first, answers: list[dict[str, Any]] = answers) -> None:
                with engine.connect() as conn:
                    answers.append(compliance_report(conn, settings, first, last))

            med, best = timed(report, runs)
            handouts = answers[-1]["totals"]["handouts"]
            bounds = {
                "zone": ZONE,
                "start": f"{first.isoformat()} 00:00 {ZONE}",
                "end": f"{(last + timedelta(days=1)).isoformat()} 00:00 {ZONE}",
            }
            per_day, _ = timed(lambda b=bounds: raw.execute(PER_DAY, b).fetchall(), runs)
            handout_rows, _ = timed(lambda b=bounds: raw.execute(HANDOUTS, b).fetchall(), runs)
            print(
                f"{name:<26}{handouts:>12,}{med:>11.2f}s{best:>7.2f}s{per_day:>15.2f}s"
                f"{handout_rows:>17.2f}s"
            )


if __name__ == "__main__":
    raise SystemExit(main())
