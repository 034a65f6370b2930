"""Intake benchmark (issue 12, "Performance"): a 1,000,000-line CSV import and a discovery of
1,000,000 replica users, each into an empty store, each beside its raw floor in the same run.

Run it from the repository root against the machine's PostgreSQL::

    .venv/bin/python -m bench.intake              # builds the replica, then times (~10 min)
    .venv/bin/python -m bench.intake --reuse      # keeps the replica database from a previous run

Data: a replica database (``cq_bench_intake_replica``) built by ``bench/populate.py``'s
generators (users, claims and requirements of every kind the rule tells apart; 0.25% of the ids
missing from the replica), and a store (``cq_bench_intake_store``) migrated with Alembic and
emptied before each timing. The CSV file (``user_id,current_score,base_score`` for every id, scores
skewed low) is written to a temporary directory.

What is timed, as an operator runs it (each a real ``callqueue`` process, so its wall time
includes starting Python):

* **import**: ``callqueue scores import FILE.csv`` into the empty store, beside the floor: the
  same file ``COPY``-ed into ``user_call_scores`` with all its indexes (run before and after the
  import; their mean is the floor). Target: within 3x of the floor.
* **discovery**: ``callqueue discover`` (a first run: the whole replica), beside the floor: a
  raw read of what the rule needs from the replica (``COPY (SELECT ...) TO STDOUT`` of the users,
  claims and requirements) plus a ``COPY`` of the rows discovery created into the empty store.
  Target: within 5x of that sum.

Before each timing: ``VACUUM (ANALYZE)`` of the store's table and a ``CHECKPOINT`` (untimed). It
prints wall time and CPU seconds (the command's process, and the PostgreSQL backends of the two
bench databases, sampled from /proc), the ratios, the command's peak memory, and checks that every
user got the queue type the data was built to have.
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from alembic import command
from sqlalchemy import create_engine, text

from app.health import alembic_config
from app.replica.schema import replica_metadata
from bench.harness.accounting import backend_ticks
from bench.harness.db import (
    DEFAULT_SERVER,
    database_exists,
    db_url,
    libpq_url,
    maintain,
    recreate_database,
    step,
)
from bench.populate import CLAIMS_SQL, PLAN, REQUIREMENTS_SQL, USERS_SQL, print_load

STORE_DB = "cq_bench_intake_store"
REPLICA_DB = "cq_bench_intake_replica"
IMPORT_TARGET = 3.0
DISCOVERY_TARGET = 5.0
SAMPLE_SECONDS = 0.1
OWNED = "user_call_scores, discovery_state, discovery_runs, queue_transitions"


# -- CPU of the database backends -----------------------------------------------------------------


class BackendCPU:
    """CPU seconds of the PostgreSQL backends serving the bench databases while it runs.

    A backend's CPU disappears from /proc when it exits (a ``callqueue`` process closing its
    connections), so /proc is sampled every ``SAMPLE_SECONDS`` and each backend counted at its
    last sample: at most one interval of a backend's work is missed.
    """

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.start: dict[int, int] = {}
        self.last: dict[int, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _read(self) -> dict[int, int]:
        return backend_ticks((STORE_DB, REPLICA_DB))

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self.last.update(self._read())

    def __enter__(self) -> BackendCPU:
        self.start = self._read()
        self.last = dict(self.start)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.last.update(self._read())

    @property
    def seconds(self) -> float:
        return sum(t - self.start.get(pid, 0) for pid, t in self.last.items()) / self.tick


@dataclass
class Cost:
    wall: float = 0.0
    client_cpu: float = 0.0
    server_cpu: float = 0.0
    peak_rss_mib: float | None = None

    @property
    def cpu(self) -> float:
        return self.client_cpu + self.server_cpu

    def line(self) -> str:
        rss = f", peak memory {self.peak_rss_mib:.0f} MiB" if self.peak_rss_mib else ""
        return (
            f"{self.wall:7.1f} s wall, CPU {self.client_cpu:5.1f} s client +"
            f" {self.server_cpu:5.1f} s PostgreSQL{rss}"
        )


@contextmanager
def measured() -> Iterator[Cost]:
    """Wall time and CPU of this process (its threads) and of the bench databases' backends."""
    cost = Cost()
    with BackendCPU() as backends:
        t0, c0 = time.perf_counter(), time.process_time()
        yield cost
        cost.wall = time.perf_counter() - t0
        cost.client_cpu = time.process_time() - c0
    cost.server_cpu = backends.seconds


def run_command(args: list[str], env: dict[str, str], log: Path) -> tuple[Cost, str]:
    """A ``callqueue`` command as its own process: its wall time, its CPU (children's rusage),
    the backends' CPU, its peak memory; returns its standard output."""
    script = Path(sys.executable).with_name("callqueue")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cost = Cost()
    with BackendCPU() as backends, log.open("w") as err:
        t0 = time.perf_counter()
        done = subprocess.run(
            [str(script), *args], env=env, stdout=subprocess.PIPE, stderr=err, text=True
        )
        cost.wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cost.client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    cost.server_cpu = backends.seconds
    cost.peak_rss_mib = after.ru_maxrss / 1024  # the largest child so far: this one
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {done.returncode}; see {log}")
    return cost, done.stdout


# -- data ---------------------------------------------------------------------------------------


def build_replica(server: str, rows: int) -> str:
    print(f"Building the replica: {rows:,} users and their claims and requirements ({REPLICA_DB})")
    url = recreate_database(server, REPLICA_DB)
    engine = create_engine(url)
    replica_metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(text("SET LOCAL synchronous_commit = off"))
        for label, sql in (
            ("users", USERS_SQL),
            ("claims", CLAIMS_SQL),
            ("claim_requirements", REQUIREMENTS_SQL),
        ):
            with step(f"replica {label}"):
                conn.execute(text(sql), {"rows": rows})
    engine.dispose()
    with step("VACUUM ANALYZE"):
        maintain(url, checkpoint=False)
    return url


def write_csv(path: Path, rows: int) -> None:
    """Every id, the replica's missing ones too; scores skewed low like a real book's."""
    rng = random.Random(20_261_201)
    with path.open("w") as out:
        out.write("user_id,current_score,base_score\n")
        for start in range(1, rows + 1, 100_000):
            lines = []
            for uid in range(start, min(start + 100_000, rows + 1)):
                score = int(201 * rng.random() ** 2.5)
                lines.append(f"{uid},{score},{score}\n")
            out.write("".join(lines))


def expected_types(store_url: str, rows: int) -> dict[str | None, int]:
    """Score rows per queue type the data was built to give (the generator's plan, evaluated
    in the store: no replica read)."""
    engine = create_engine(store_url)
    with engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT CASE WHEN missing OR cat = 'N' THEN NULL"
                " WHEN cat = 'U' THEN 'unsigned_users' ELSE 'outstanding_requests' END, count(*)"
                f" FROM ({PLAN}) plan GROUP BY 1"
            ),
            {"rows": rows},
        ).all()
    engine.dispose()
    return {t: int(n) for t, n in found}


def stored_types(store_url: str) -> dict[str | None, int]:
    engine = create_engine(store_url)
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT current_queue_type, count(*) FROM user_call_scores GROUP BY 1")
        ).all()
    engine.dispose()
    return {t: int(n) for t, n in found}


def settle(store_url: str, *, empty: bool) -> None:
    engine = create_engine(store_url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        if empty:
            conn.execute(text(f"TRUNCATE {OWNED}"))
        conn.execute(text("VACUUM (ANALYZE) user_call_scores"))
        conn.execute(text("CHECKPOINT"))
    engine.dispose()


# -- floors -------------------------------------------------------------------------------------


def copy_file_floor(store_url: str, csv_path: Path) -> Cost:
    """The file straight into the table with its indexes: PostgreSQL's fastest way in."""
    settle(store_url, empty=True)
    with measured() as cost, psycopg.connect(libpq_url(store_url)) as conn:
        with (
            conn.cursor() as cur,
            cur.copy(
                "COPY user_call_scores (user_id, current_score, base_score)"
                " FROM STDIN (FORMAT csv, HEADER true)"
            ) as copy,
            csv_path.open("rb") as source,
        ):
            while chunk := source.read(1 << 16):
                copy.write(chunk)
        conn.commit()
    return cost


REPLICA_READS = (
    "SELECT id, is_enabled, current_signature_file_id, created_at FROM users",
    "SELECT id, user_id, status, created_at FROM claims",
    "SELECT id, claim_id, type, status, claim_requirement_reason, created_at"
    " FROM claim_requirements",
)


def replica_read_floor(replica_url: str) -> Cost:
    """Everything the rule looks at, read once as fast as PostgreSQL sends it."""
    with measured() as cost, psycopg.connect(libpq_url(replica_url)) as conn, conn.cursor() as cur:
        for query in REPLICA_READS:
            with cur.copy(f"COPY ({query}) TO STDOUT") as copy:
                for _ in copy:
                    pass
    return cost


def copy_rows_floor(store_url: str, rows: list[tuple[int, str | None]]) -> Cost:
    """Discovery's rows, the same ones, straight into the empty table with its indexes."""
    settle(store_url, empty=True)
    with measured() as cost, psycopg.connect(libpq_url(store_url)) as conn:
        with (
            conn.cursor() as cur,
            cur.copy("COPY user_call_scores (user_id, current_queue_type) FROM STDIN") as copy,
        ):
            for row in rows:
                copy.write_row(row)
        conn.commit()
    return cost


# -- main ---------------------------------------------------------------------------------------


def ratio(cost: Cost, floor: Cost) -> str:
    return f"{cost.wall / floor.wall:.2f}x wall, {cost.cpu / max(floor.cpu, 0.01):.2f}x CPU"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the PostgreSQL")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--reuse", action="store_true", help="keep the replica database")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    print_load("start")

    if args.reuse and database_exists(args.server, REPLICA_DB):
        replica_url = db_url(args.server, REPLICA_DB)
        print(f"Reusing {REPLICA_DB}")
    else:
        replica_url = build_replica(args.server, args.rows)
    store_url = recreate_database(args.server, STORE_DB)
    with step("alembic upgrade head (store)"):
        command.upgrade(alembic_config(store_url), "head")
    expected = expected_types(store_url, args.rows)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REPLICA_"))},
        "DATABASE_URL": store_url,
        "REPLICA_DATABASE_URL": replica_url,
        "APP_ENV": "test",
    }
    work = Path(tempfile.mkdtemp(prefix="cq-bench-intake-"))
    csv_path = work / "scores.csv"
    with step(f"write {csv_path}"):
        write_csv(csv_path, args.rows)
    print(f"  {csv_path.stat().st_size / 2**20:.1f} MiB, {args.rows:,} lines and a header")

    # -- import -----------------------------------------------------------------------------
    print("\n=== CSV import into an empty store")
    floor_before = copy_file_floor(store_url, csv_path)
    print(f"  floor, COPY of the file (before): {floor_before.line()}")
    settle(store_url, empty=True)
    imported, summary = run_command(["scores", "import", str(csv_path)], env, work / "import.log")
    print(f"  callqueue scores import:          {imported.line()}")
    print(f"    {summary.strip()}")
    got = stored_types(store_url)
    missing_from_replica = args.rows - sum(expected.values())
    want = {**expected, None: expected.get(None, 0) + missing_from_replica}
    check = "as built" if got == want else f"MISMATCH: {got} != {want}"
    print(f"    score rows per queue type: {got} ({check})")
    floor_after = copy_file_floor(store_url, csv_path)
    print(f"  floor, COPY of the file (after):  {floor_after.line()}")
    floor = Cost(
        (floor_before.wall + floor_after.wall) / 2,
        (floor_before.client_cpu + floor_after.client_cpu) / 2,
        (floor_before.server_cpu + floor_after.server_cpu) / 2,
    )
    met = imported.wall <= IMPORT_TARGET * floor.wall
    print(
        f"  import / floor: {ratio(imported, floor)};"
        f" target within {IMPORT_TARGET:.0f}x: {'met' if met else 'MISSED'}"
    )

    # -- discovery ----------------------------------------------------------------------------
    print("\n=== discovery of the whole replica into an empty store")
    settle(store_url, empty=True)
    discovered, report = run_command(["discover"], env, work / "discover.log")
    progress = sum("discovery.progress" in line for line in (work / "discover.log").open())
    print(f"  callqueue discover:               {discovered.line()}")
    print(f"    {report.strip()}")
    print(f"    {progress} progress lines in its log")
    got = stored_types(store_url)
    want = {t: n for t, n in expected.items() if t is not None}
    print(f"    score rows per queue type: {got} ({'as built' if got == want else 'MISMATCH'})")
    engine = create_engine(store_url)
    with engine.connect() as conn:
        rows = [
            tuple(r)
            for r in conn.execute(text("SELECT user_id, current_queue_type FROM user_call_scores"))
        ]
    engine.dispose()
    read = replica_read_floor(replica_url)
    print(f"  floor, replica read (COPY out):   {read.line()}")
    copied = copy_rows_floor(store_url, rows)
    print(f"  floor, COPY of its {len(rows):,} rows:   {copied.line()}")
    floor = Cost(
        read.wall + copied.wall,
        read.client_cpu + copied.client_cpu,
        read.server_cpu + copied.server_cpu,
    )
    met = discovered.wall <= DISCOVERY_TARGET * floor.wall
    print(
        f"  discovery / (read + COPY): {ratio(discovered, floor)};"
        f" target within {DISCOVERY_TARGET:.0f}x: {'met' if met else 'MISSED'}"
    )

    print()
    print_load("end")
    print(f"Total benchmark time {time.perf_counter() - started:.0f} s (logs in {work})")
    csv_path.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
