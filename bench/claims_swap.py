"""Claims during a population swap: next-user latency while a 100,000-entry queue is replaced.

Measures the claim cycle at a paced rate first in steady state, then, with the same load still
running, while populations rewrite the whole queue one after another, and compares the two in the
same run. Target: p99 next-user latency during a swap within 2x of steady. Run it from the
repository root against the machine's PostgreSQL::

    .venv/bin/python -m bench.claims_swap            # 100,000 entries, 3 swaps, about 3 minutes
    .venv/bin/python -m bench.claims_swap --quick    # 10,000 entries, about 1 minute
    .venv/bin/python -m bench.claims_swap --swaps 5 --rate 100 --steady-seconds 60

The claims benchmark's set-up (``bench/harness/``: databases, one population, 64 agents, the
two-worker server) with ``QUEUE_SIZE_LIMIT`` = ``--entries`` on the server; 5 s at ``--rate``
(50) cycles/s, not counted; then one paced run at that rate (next-user, then complete with
``no_answer``): ``--steady-seconds`` (30; 10 with ``--quick``) of steady state, then ``--swaps``
(3) populations of the unsigned queue through ``GET
/api/cron/populate-separated-queues?queue=unsigned_users`` (the cron secret as the bearer token,
as the scheduler's cron calls it), each ``--gap-seconds`` (5; 3) after the previous one answered,
and ``--gap-seconds`` more after the last. A separate connection polls ``pg_locks`` every
``--poll-ms`` (20) during each population for the queue's swap lock held exclusively: the swap
transaction's window, in which every claim and completion of the queue waits.

Every swap must rewrite the full queue, but each cycle's ``no_answer`` puts its user out of reach
for 4 hours, so each population's candidates shrink by the users handed out since the last. The
data therefore holds ``--spare-users`` (half the entries) more users than the queue needs; no
service table is touched behind its back. Each population reports how many entries it removed
and wrote: at least 95% of ``--entries`` written, else the swap was not a full one.

It prints the paced run as ``bench.claims`` prints a mode, each population (when, how long over
HTTP and by the server's own count, removed / written / kept assigned, the swap transaction's
window, the most claims seen waiting for it), duplicates from the agents' side and the ledger,
then the summary: next-user p50/p99/max, complete p99 and the number of claims for requests sent
in steady state, during a population (walk and swap), of those the ones overlapping the swap
transaction, and after the populations; the ratio p99(during) / p99(steady) against the
target; non-2xx answers by status per window; 204s during a population apart (the service
promises none: a claim that meets a swap waits for it and then sees the new queue); duplicates.
Exit status 1 when a promise was broken (a 204 or a non-2xx answer, a duplicate, a failed or
partial population), not for a missed latency target.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from bench.harness.checks import duplicate_total
from bench.harness.db import libpq_url
from bench.harness.load import ModeResult, pct
from bench.harness.report import print_duplicate_verdict
from bench.harness.seed import QUEUE
from bench.harness.server import CRON_POPULATE, PopulationCall, populate_over_http
from bench.harness.session import ClaimsBench, add_arguments

STORE_DB = "cq_bench_swap_store"
REPLICA_DB = "cq_bench_swap_replica"
TARGET_RATIO = 2.0
# Paced, before the measured run and not counted: the pools' connections are opened by the
# first seconds at the rate (the warm-up's one cycle per agent does not open them all), and the
# steady window must not carry those openings.
SETTLE_SECONDS = 5.0
FULL_SWAP = 0.95  # a swap writes at least this share of QUEUE_SIZE_LIMIT


class SwapLockWatch:
    """When the population's swap transaction held the queue's swap lock exclusively, and the
    most lock requests seen waiting for it (claims and completions take it shared), by polling
    ``pg_locks`` from its own connection while a population runs."""

    SQL = """
        SELECT count(*) FILTER (WHERE mode = 'ExclusiveLock' AND granted),
               count(*) FILTER (WHERE NOT granted)
          FROM pg_locks
         WHERE locktype = 'advisory' AND classid = %s::oid AND objid = %s::oid AND objsubid = 2
    """

    def __init__(self, store_url: str, interval: float) -> None:
        from app.queues.kinds import KINDS, SWAP_LOCK_KEY
        from app.vocabulary import QueueType

        self.url = libpq_url(store_url)
        self.interval = interval
        self.lock = (SWAP_LOCK_KEY, KINDS[QueueType(QUEUE)].swap_lock_id)
        self.first: float | None = None
        self.last: float | None = None
        self.peak_waiting = 0
        self.polls = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._ready = threading.Event()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            self._ready.set()
            while not self._stop.is_set():
                t = time.perf_counter()
                held, waiting = conn.execute(self.SQL, self.lock).fetchone()  # type: ignore[misc]
                self.polls += 1
                if held:
                    self.first = self.first if self.first is not None else t
                    self.last = t
                self.peak_waiting = max(self.peak_waiting, waiting)
                self._stop.wait(self.interval)

    def __enter__(self) -> SwapLockWatch:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def window(self) -> tuple[float, float] | None:
        """From the first poll that saw the lock held to one interval after the last."""
        if self.first is None or self.last is None:
            return None
        return self.first, self.last + self.interval


@dataclass
class Swap:
    call: PopulationCall
    lock: tuple[float, float] | None
    peak_waiting: int

    @property
    def start(self) -> float:
        return self.call.started

    @property
    def end(self) -> float:
        return self.call.started + self.call.seconds

    def queue(self) -> dict[str, Any]:
        """The population's report for the queue (empty when the call failed)."""
        return self.call.body.get("queues", {}).get(QUEUE, {}) if self.call.status == 200 else {}


@dataclass
class Window:
    name: str
    next_ms: list[float] = field(default_factory=list)
    complete_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)  # non-2xx, 204 and transport errors

    def add(self, route: str, ms: float, status: str) -> None:
        if status.isdigit():
            (self.next_ms if route == "next-user" else self.complete_ms).append(ms)
        if status != "200":
            self.statuses[f"{route} {status}"] += 1

    @property
    def empty(self) -> int:
        return self.statuses["next-user 204"]

    def bad(self) -> dict[str, int]:
        """Answers other than 2xx, and transport errors, by route and status."""
        return {k: v for k, v in self.statuses.items() if not k.split(" ", 1)[1].startswith("2")}

    def non_2xx(self) -> str:
        return ", ".join(f"{k}: {v}" for k, v in sorted(self.bad().items())) or "none"


def windows(result: ModeResult, swaps: list[Swap]) -> dict[str, Window]:
    """Every request of the run by when it was sent: before the first population (steady),
    during one (and, of those, overlapping its swap transaction), or after one."""
    out = {
        key: Window(name)
        for key, name in (
            ("steady", "steady (before the first population)"),
            ("during", "during a population (walk + swap)"),
            ("swap", "  overlapping the swap transaction"),
            ("after", "between and after the populations"),
        )
    }
    first = min((s.start for s in swaps), default=float("inf"))
    for route, sent, ms, status in result.requests:
        if sent < first:
            out["steady"].add(route, ms, status)
            continue
        swap = next((s for s in swaps if s.start <= sent <= s.end), None)
        if swap is None:
            out["after"].add(route, ms, status)
            continue
        out["during"].add(route, ms, status)
        if swap.lock and sent < swap.lock[1] and sent + ms / 1000 > swap.lock[0]:
            out["swap"].add(route, ms, status)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser, "10,000 entries, a 10 s steady window, 3 s between swaps")
    parser.add_argument("--rate", type=float, default=50.0, help="paced cycles/s (50)")
    parser.add_argument(
        "--steady-seconds", type=float, default=None, help="before the first swap (30)"
    )
    parser.add_argument("--swaps", type=int, default=3, help="populations, one after another")
    parser.add_argument("--gap-seconds", type=float, default=None, help="after each population (5)")
    parser.add_argument(
        "--spare-users", type=int, default=None, help="users beyond the queue's (entries / 2)"
    )
    parser.add_argument("--poll-ms", type=float, default=20.0, help="pg_locks poll interval")
    args = parser.parse_args(argv)
    steady_seconds = args.steady_seconds or (10.0 if args.quick else 30.0)
    gap_seconds = args.gap_seconds or (3.0 if args.quick else 5.0)

    bench = ClaimsBench(args, STORE_DB, REPLICA_DB)
    entries = bench.entries
    spare = args.spare_users if args.spare_users is not None else entries // 2
    bench.prepare(users=entries + entries // 50 + spare)
    bench.settle(baseline_follows=False)
    swaps: list[Swap] = []
    with bench.serving(extra_env={"QUEUE_SIZE_LIMIT": str(entries)}) as gen:
        assert bench.server is not None
        base_url = bench.server.base_url
        print(
            f"\nPaced at {args.rate:g} cycles/s: {steady_seconds:g} s steady, then {args.swaps}"
            f" populations of {QUEUE} (GET {CRON_POPULATE}?queue={QUEUE}, QUEUE_SIZE_LIMIT"
            f" {entries:,}) one after another, {gap_seconds:g} s apart, under the same load"
        )
        settle = bench.run(gen.fixed_rate(args.rate, SETTLE_SECONDS, "settle"))
        print(
            f"  settle: {settle.cycles:,} cycles in {settle.seconds:.1f} s at the rate, not"
            f" counted ({settle.non_2xx()} non-2xx)"
        )
        t0 = time.perf_counter()

        def schedule() -> None:
            time.sleep(steady_seconds)
            for n in range(1, args.swaps + 1):
                with SwapLockWatch(bench.store_url, args.poll_ms / 1000) as watch:
                    call = populate_over_http(base_url, QUEUE)
                swap = Swap(call, watch.window, watch.peak_waiting)
                swaps.append(swap)
                q = swap.queue()
                lock = (
                    f"swap transaction {swap.lock[1] - swap.lock[0]:.2f} s (lock seen held"
                    f" {swap.lock[0] - t0:.1f}-{swap.lock[1] - t0:.1f} s), at most"
                    f" {swap.peak_waiting} waiting for it"
                    if swap.lock
                    else f"swap lock never seen held ({watch.polls} polls)"
                )
                print(
                    f"    population {n}: {swap.start - t0:.1f}-{swap.end - t0:.1f} s, HTTP"
                    f" {call.status} in {call.seconds:.1f} s"
                    + (
                        f" (server {q.get('duration_ms', 0) / 1000:.1f} s), {q.get('status')};"
                        f" removed {q.get('removed', 0):,}, written {q.get('populated', 0):,},"
                        f" kept assigned {q.get('kept_assigned', 0):,}, eligible"
                        f" {q.get('eligible', 0):,}, invalid {q.get('invalid', 0):,}; {lock}"
                        if call.status == 200
                        else f": {call.error}"
                    ),
                    flush=True,
                )
                time.sleep(gap_seconds)

        run = bench.measured(
            lambda: gen.paced(args.rate, schedule, f"{args.rate:g}/s with {args.swaps} swaps")
        )
    dup, ledger = bench.check_duplicates()
    bench.finish()

    by = windows(run, swaps)
    steady, during = by["steady"], by["during"]
    bench.summary_head("swap: ")
    print(
        f"paced at {args.rate:g} cycles/s ({run.late:,} late starts); {len(swaps)} populations of"
        f" {QUEUE}, QUEUE_SIZE_LIMIT {entries:,}:"
    )
    for n, swap in enumerate(swaps, 1):
        q = swap.queue()
        lock = f"{swap.lock[1] - swap.lock[0]:.2f} s" if swap.lock else "not seen"
        print(
            f"  {n}: HTTP {swap.call.status} in {swap.call.seconds:.1f} s, written"
            f" {q.get('populated', 0):,}, removed {q.get('removed', 0):,}; swap transaction {lock},"
            f" at most {swap.peak_waiting} waiting"
        )
    header = (
        f"{'requests sent':<40}{'claims':>8}{'nu p50':>8}{'p99':>8}{'max':>8}"
        f"{'cp p99':>8}{'204':>6}  non-2xx"
    )
    print(header)
    print("-" * len(header))
    for w in by.values():
        print(
            f"{w.name:<40}{len(w.next_ms):>8,}{pct(w.next_ms, 50):>8.1f}{pct(w.next_ms, 99):>8.1f}"
            f"{max(w.next_ms, default=float('nan')):>8.1f}{pct(w.complete_ms, 99):>8.1f}"
            f"{w.empty:>6}  {w.non_2xx()}"
        )
    print("-" * len(header))
    print("latencies in ms at the load generator (nu = next-user, cp = complete)")
    p99_steady, p99_during = pct(steady.next_ms, 99), pct(during.next_ms, 99)
    ratio = p99_during / p99_steady if p99_steady else float("nan")
    print(
        f"p99 next-user during a swap {p99_during:.1f} ms / steady {p99_steady:.1f} ms ="
        f" x{ratio:.2f}; target: p99 during a swap within {TARGET_RATIO:g}x of steady:"
        f" {'met' if ratio <= TARGET_RATIO else 'MISSED'}"
    )
    print(
        f"204 (nobody to hand out) during a population: {during.empty}"
        f" ({'OK' if during.empty == 0 else 'FAILED: the queue looked empty while swapping'});"
        f" in the whole run: {run.empty}"
    )
    errors = sum(n for key, w in by.items() if key != "swap" for n in w.bad().values())
    print(f"non-2xx answers and transport errors in the whole run: {errors}")
    written = [s.queue().get("populated", 0) for s in swaps]
    full = len(swaps) == args.swaps and all(w >= FULL_SWAP * entries for w in written)
    print(
        f"every swap rewrote the queue (written >= {FULL_SWAP:.0%} of {entries:,}):"
        f" {'yes' if full else 'NO'} ({', '.join(f'{w:,}' for w in written) or 'none ran'})"
    )
    dups = duplicate_total(dup, ledger)
    print_duplicate_verdict(dups)
    print(bench.elapsed())
    broken = run.empty or errors or dups or not full
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
