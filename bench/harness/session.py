"""One claims benchmark's life, as every ``bench/claims*.py`` script runs it: scratch databases,
one population, the agents; the server and the load generator, with CPU and connections
accounted around each measured mode; then the duplicate checks, the raw-SQL baseline and the
databases dropped (unless ``--keep``). The server (and py-spy) are stopped on exit, also on
Ctrl-C or SIGTERM; the databases are left behind when a run fails."""

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.harness.accounting import Accounting, ConnectionSampler, load_average
from bench.harness.baseline import baseline, reset_queue
from bench.harness.checks import duplicates, ledger_check
from bench.harness.db import DEFAULT_SERVER, drop_databases, libpq_url, maintain
from bench.harness.load import Handout, LoadGenerator, ModeResult, loop_factory, stop_load
from bench.harness.receiver import ReceiverProcess, start_receiver
from bench.harness.report import cpu_line, print_agents, print_mode
from bench.harness.seed import (
    HISTORY_ROWS,
    REPLICA_DB,
    STORE_DB,
    agent_headers,
    build,
    create_agents,
    populate,
    subscribe_everything,
)
from bench.harness.server import (
    KEEP_ALIVE_SECONDS,
    Server,
    free_port,
    scrape,
    server_delta,
    start_server,
)


def add_arguments(parser: argparse.ArgumentParser, quick: str) -> None:
    """The options every claims benchmark takes; ``quick`` says what ``--quick`` shortens."""
    parser.add_argument("--server", default=DEFAULT_SERVER, help="admin URL of the PostgreSQL")
    parser.add_argument("--quick", action="store_true", help=quick)
    parser.add_argument("--entries", type=int, default=None, help="queue size (100,000)")
    parser.add_argument("--agents", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pool-size", type=int, default=10, help="DB_POOL_SIZE per worker")
    parser.add_argument("--max-overflow", type=int, default=0, help="DB_MAX_OVERFLOW per worker")
    parser.add_argument("--keep", action="store_true", help="keep the scratch databases")
    parser.add_argument(
        "--ledger-rows",
        type=int,
        default=HISTORY_ROWS,
        help=f"finished assignments already in the ledger ({HISTORY_ROWS:,}: a month; 10,000,000:"
        " a year of a 150-seat centre)",
    )
    parser.add_argument(
        "--webhooks",
        action="store_true",
        help="one webhook endpoint subscribed to every event type, a local receiver behind it",
    )
    parser.add_argument(
        "--receiver-nice",
        type=int,
        default=0,
        help="with --webhooks: the receiver's nice (19: it stands for another machine and"
        " takes CPU only when the service leaves some)",
    )
    parser.add_argument(
        "--auth",
        choices=("token", "session"),
        default="token",
        help="agents send a bearer token, or a session cookie and CSRF token as the console does",
    )


def add_timing_arguments(parser: argparse.ArgumentParser) -> None:
    """How long the paced and flat-out runs and the baseline last (``Timing``)."""
    parser.add_argument("--rate-seconds", type=float, default=None, help="per rate (20)")
    parser.add_argument("--flat-seconds", type=float, default=None, help="flat out (30)")
    parser.add_argument("--baseline-seconds", type=float, default=None, help="baseline (20)")


@dataclass(frozen=True)
class Timing:
    rate_seconds: float
    flat_seconds: float
    baseline_seconds: float

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Timing:
        quick = args.quick
        return cls(
            rate_seconds=args.rate_seconds or (5.0 if quick else 20.0),
            flat_seconds=args.flat_seconds or (5.0 if quick else 30.0),
            baseline_seconds=args.baseline_seconds or (3.0 if quick else 20.0),
        )


class ClaimsBench:
    """The databases, the server and the measurements of one run; see the module's docstring.
    ``prepare`` and ``settle`` before ``serving``; ``check_duplicates``, ``run_baseline`` and
    ``finish`` after it."""

    def __init__(
        self, args: argparse.Namespace, store_db: str = STORE_DB, replica_db: str = REPLICA_DB
    ) -> None:
        self.args = args
        self.entries: int = args.entries or (10_000 if args.quick else 100_000)
        self.dbs = (store_db, replica_db)
        self.started = time.perf_counter()
        self.load_start = load_average()
        self.results: list[ModeResult] = []
        self.server: Server | None = None
        self.spy_pids: list[int] = []  # profilers to stop on the way out
        self.handouts: list[Handout] = []
        self.log_lines: list[str] = []
        self.prom_dir = tempfile.mkdtemp(prefix="cq-bench-prom-")
        self.accounting: Accounting | None = None
        self.sampler = ConnectionSampler(args.server, self.dbs)
        self.runner: asyncio.Runner | None = None
        self.receiver: ReceiverProcess | None = None
        atexit.register(self._cleanup)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    # -- before the server -------------------------------------------------------------------

    def prepare(self, users: int | None = None) -> None:
        """Build both databases (``users``: see ``seed.build``), populate, create the agents."""
        print(f"Load average at start: {self.load_start} ({os.cpu_count()} CPUs)")
        store_db, replica_db = self.dbs
        self.store_url, self.replica_url, self.users = build(
            self.args.server, self.entries, store_db, replica_db, users, self.args.ledger_rows
        )
        populate(self.store_url, self.replica_url, self.entries)
        self.tokens = create_agents(self.store_url, self.args.agents)
        self.credentials = agent_headers(self.store_url, self.tokens, self.args.auth)
        if getattr(self.args, "webhooks", False):
            niceness = self.args.receiver_nice
            self.receiver = start_receiver(free_port(), niceness)
            subscribe_everything(self.store_url, self.receiver.url)
            print(
                f"Webhooks: one endpoint subscribed to every event type, {self.receiver.url}"
                f" (receiver at nice {niceness})"
            )

    def settle(self, baseline_follows: bool = True) -> None:
        """VACUUM and CHECKPOINT (the server runs with autovacuum off); the connection budget."""
        args = self.args
        maintain(self.store_url)
        store_max = args.workers * (args.pool_size + args.max_overflow)
        # The replica pool is sized from the same settings as the store's (app/replica/reader.py).
        replica_max = store_max
        print(
            f"Pools: store DB_POOL_SIZE={args.pool_size} DB_MAX_OVERFLOW={args.max_overflow} per"
            f" worker x {args.workers} workers = {store_max}; replica the same, {replica_max};"
            f" load generator 2 (monitoring); at most"
            f" {store_max + replica_max + 2} of max_connections 100"
            + (
                f" (the baseline's {args.agents} run after the server has stopped)"
                if baseline_follows
                else ""
            )
        )
        self.accounting = Accounting(args.server, self.dbs)

    # -- the server --------------------------------------------------------------------------

    @contextlib.contextmanager
    def serving(
        self, callback_delay: float = 5.0, extra_env: dict[str, str] | None = None
    ) -> Iterator[LoadGenerator]:
        """The server started and the agents warmed up; on leaving, the agents' connections
        closed and the server stopped (its log summary and the hand-outs kept)."""
        args = self.args
        assert self.accounting is not None, "settle() first"
        self.runner = asyncio.Runner(loop_factory=loop_factory())
        try:
            self.server = server = start_server(
                self.store_url,
                self.replica_url,
                self.prom_dir,
                workers=args.workers,
                pool_size=args.pool_size,
                max_overflow=args.max_overflow,
                extra_env=extra_env,
            )
            self.accounting.worker_pids = server.workers()
            print(
                f"Server: uvicorn app.main:app --workers {args.workers} --no-access-log"
                f" --timeout-keep-alive {KEEP_ALIVE_SECONDS} on port {server.port} (pids"
                f" {server.proc.pid} -> {', '.join(map(str, server.workers()))}), validation on,"
                f" LEASE_SECONDS default, {args.agents} agents by {args.auth}"
            )
            gen = LoadGenerator(server.base_url, self.credentials, callback_delay)
            self.runner.run(gen.warm_up())
            print(
                "  client connections per worker after the warm-up:"
                f" {server.connections_per_worker()} (each agent keeps one keep-alive"
                " connection; the kernel picks the worker)"
            )
            yield gen
            self.handouts, self.log_lines = stop_load(self.runner, gen, server)
        finally:
            with contextlib.suppress(Exception):
                self.runner.close()
            self._stop_processes()

    def run(self, coroutine: Any) -> Any:
        """Run a coroutine of the load generator on the agents' event loop."""
        assert self.runner is not None
        return self.runner.run(coroutine)

    def measured(self, run: Callable[[], Any]) -> ModeResult:
        """One mode (``run`` makes its coroutine), with the server's own timings, CPU and peak
        connections around it; printed and kept for the summary."""
        server, accounting = self.server, self.accounting
        assert server is not None and accounting is not None
        timings = scrape(server.base_url)
        self.sampler.start()
        before = accounting.snapshot()
        result: ModeResult = self.run(run())
        after = accounting.snapshot()
        result.peak_connections = self.sampler.stop()
        result.cpu = accounting.delta(before, after)
        result.server = server_delta(timings, scrape(server.base_url))
        print_mode(result, self.dbs)
        self.results.append(result)
        return result

    # -- after the server --------------------------------------------------------------------

    def check_duplicates(self) -> tuple[dict[str, int], dict[str, int]]:
        """The server's log summary, then the duplicates from the agents' side and the ledger."""
        print("\n".join(self.log_lines))
        dup = duplicates(self.handouts)
        ledger = ledger_check(self.store_url)
        print_agents(dup, ledger)
        return dup, ledger

    def run_baseline(self, seconds: float) -> dict[str, Any]:
        """The raw-SQL baseline on the reset queue; its figures, with ``rate`` NaN and ``error``
        when it could not run."""
        assert self.accounting is not None
        print(f"\nRaw-SQL baseline ({self.args.agents} psycopg connections, autocommit, flat out)")
        reset_queue(self.store_url)
        self.sampler.start()
        self.accounting.worker_pids = []
        base = baseline(self.store_url, self.args.agents, seconds, self.accounting.snapshot)
        peak = self.sampler.stop()
        if "error" in base:
            print(f"  baseline failed: {base['error']}")
            base["rate"] = float("nan")
            return base
        base["cpu"] = cpu = self.accounting.delta(base["before"], base["after"])
        print(
            f"  {base['cycles']:,} cycles in {base['seconds']:.1f} s = {base['rate']:.0f}"
            f" cycles/s; errors: {base['errors'] or 'none'}"
            + ("; the queue ran dry (rate over the time until then)" if base["ran_dry"] else "")
        )
        print("    " + cpu_line(cpu, base["cycles"]))
        print(f"    peak connections {peak[1]} ours / {peak[0]} on the server")
        return base

    def finish(self) -> None:
        """Close the monitor, drop the databases unless ``--keep``."""
        if self.accounting is not None:
            self.accounting.close()
        shutil.rmtree(self.prom_dir, ignore_errors=True)
        if not self.args.keep:
            drop_databases(self.args.server, self.dbs)

    def summary_head(self, what: str = "") -> None:
        """The summary's first lines: what ran, on what, and the load average at both ends."""
        args = self.args
        print("\n" + "=" * 100)
        print(
            f"SUMMARY  {what}queue {self.entries:,} entries ({self.users:,} users), {args.agents}"
            f" agents, uvicorn x{args.workers}, store pool {args.pool_size}+{args.max_overflow}"
            f"/worker, replica pool {args.pool_size}+{args.max_overflow}/worker, validation on"
        )
        print(
            f"load average: start {self.load_start}, end {load_average()} ({os.cpu_count()} CPUs)"
        )

    def elapsed(self) -> str:
        return f"total benchmark time {time.perf_counter() - self.started:.0f} s"

    # -- on the way out ----------------------------------------------------------------------

    def _stop_processes(self) -> None:
        for pid in list(self.spy_pids):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
        if self.server is not None:
            self.server.stop()
            self.server = None

    def webhook_figures(self) -> str:
        """What the endpoint got: events written, delivered, waiting; the receiver's count."""
        if self.receiver is None:
            return "webhooks: none subscribed"
        with psycopg.connect(libpq_url(self.store_url)) as conn:
            events, delivered, waiting = conn.execute(
                "SELECT (SELECT count(*) FROM webhook_events),"
                " count(*) FILTER (WHERE status = 'delivered'),"
                " count(*) FILTER (WHERE status = 'pending') FROM webhook_deliveries"
            ).fetchone()
        return (
            f"webhooks: {events:,} events written, {delivered:,} delivered, {waiting:,} waiting;"
            f" the receiver counted {self.receiver.received():,}"
        )

    def _cleanup(self) -> None:
        self._stop_processes()
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None
        shutil.rmtree(self.prom_dir, ignore_errors=True)
