"""Calling-rules comparison (issue 14, SPEC 7.3): the claim cycle with the calling rules off and on.

Measures what the rules cost the claim cycle: p99 next-user latency at a paced rate and the
flat-out rate (as a ratio to the raw-SQL baseline of the same run) with the rules on must stay
within 10% of the same workload with them off. Run it from the repository root::

    .venv/bin/python -m bench.claims_rules             # 100,000 entries, 2 rounds, ~5 min
    .venv/bin/python -m bench.claims_rules --quick     # 10,000 entries, 5 s runs, ~1 min
    .venv/bin/python -m bench.claims_rules --rules-rounds 2 --rate-seconds 15 --flat-seconds 15

The claims benchmark's set-up (``bench/harness/``: databases, one population, 64 agents, the
two-worker server, plus one supervisor), then ``--rules-rounds`` pairs of runs alternating off and
on (ABBA), each ``--rules-rate`` (50) cycles/s for ``--rate-seconds`` then flat out for
``--flat-seconds``. Off: ``PUT /api/admin/calling-rules`` (as the supervisor) ``{"hours":
"always", "holidays": []}`` and an empty suppression list; on: ``{"hours": "mon-sun
00:00-24:00"}`` (a weekly window open at any hour) with sixteen holiday dates none of which is
near the run, and ``--suppressed`` (100,000) numbers on the list, 07911 100000 onwards (never a
bench user's 07700 900xxx), hashed with ``SuppressionList.phone_key`` under the server's
``SUPPRESSION_KEY`` and written straight into the store (``bench/harness/direct.py``); a POST of
one of them must answer ``already_present``. The attempt caps are the service's defaults in both
(3 a day, 10 a week): the queue is never refilled while the server runs, so each user is handed
out at most once and the caps stay far away. Afterwards the rules are off again; then the raw-SQL
baseline.

It prints every run as ``bench.claims`` prints a mode, with the run's ``entry_invalidations`` by
reason and the pending entries left; duplicates from the agents' side and the ledger; the
baseline; and the comparison: per variant every run's p99 and flat-out rate, pooled, the ratio to
the baseline, CPU per flat-out cycle, on / off, and the hand-outs refused for ``suppressed`` or
``attempt_cap`` and the 204s (queue dry): they must be 0, else the comparison is not like for
like. It used to run inside ``bench.claims --rules``, after that script's rates and flat-out modes
had used part of the queue; it now starts on a full one.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import psycopg

from bench.harness.alternating import Runs, alternating_runs, print_alternating_summary
from bench.harness.checks import duplicate_total
from bench.harness.db import libpq_url, step
from bench.harness.direct import replace_suppression_list
from bench.harness.load import LoadGenerator, ModeResult
from bench.harness.report import print_duplicate_verdict
from bench.harness.seed import TABLE, create_agents
from bench.harness.server import SUPPRESSION_KEY
from bench.harness.session import ClaimsBench, Timing, add_arguments, add_timing_arguments

STORE_DB = "cq_bench_rules_store"
REPLICA_DB = "cq_bench_rules_replica"
RULES_TIMEZONE = "Europe/London"
RULES_OFF: dict[str, Any] = {"timezone": RULES_TIMEZONE, "hours": "always", "holidays": []}
# Open at any hour the benchmark runs (SPEC 7.3 grammar: every day, 24:00 as an end), but a real
# weekly window rather than the "always" shortcut; holidays: eight fixed dates a year (this year
# and the next), minus the days the run could fall on.
RULES_ON_HOURS = "mon-sun 00:00-24:00"
BANK_HOLIDAYS = (
    "01-01",
    "04-03",
    "04-06",
    "05-04",
    "05-25",
    "08-31",
    "12-25",
    "12-28",
)
SUPPRESSED_NUMBERS = 100_000
# Valid-length GB mobile numbers 07911 100000-199999: never the bench users' (07700 900xxx).
SUPPRESSED_PREFIX = "07911 1"


def rules_on_body(today: datetime) -> dict[str, Any]:
    local = today.astimezone(ZoneInfo(RULES_TIMEZONE)).date()
    near = {local - timedelta(days=1), local, local + timedelta(days=1)}
    holidays = sorted(
        {
            date.fromisoformat(f"{year}-{md}")
            for year in (local.year, local.year + 1)
            for md in BANK_HOLIDAYS
        }
        - near
    )
    return {
        "timezone": RULES_TIMEZONE,
        "hours": RULES_ON_HOURS,
        "holidays": [d.isoformat() for d in holidays],
    }


def suppression_hashes(key: str, n: int) -> list[str]:
    """The keyed hashes (the service's own ``SuppressionList.phone_key``) of ``n`` numbers that
    no bench user has; checked against the users' numbers (07700 900000-900999)."""
    from app.rules.suppression import SuppressionList

    if n > 100_000:
        raise SystemExit("--suppressed: at most 100,000 numbers (07911 100000-199999)")
    hasher = SuppressionList(key.encode())
    hashes = [hasher.phone_key(f"{SUPPRESSED_PREFIX}{i:05d}") for i in range(n)]
    users = {hasher.phone_key(f"07700 900{i:03d}") for i in range(1000)}
    if None in hashes or users & set(hashes):
        raise SystemExit("the suppression numbers do not parse, or include a bench user's number")
    return [h for h in hashes if h is not None]


@dataclass
class RulesSwitch:
    """Turns the calling rules on and off between runs: the rules through the supervisors' API,
    the suppression list straight into the store with the server's key (``direct``)."""

    base_url: str
    supervisor_token: str
    store_url: str
    hashes: list[str]
    fingerprint: str
    invalidations: dict[bool, Counter[str]] = field(
        default_factory=lambda: {False: Counter(), True: Counter()}
    )
    _seen: Counter[str] = field(default_factory=Counter)

    def __call__(self, on: bool) -> None:
        t0 = time.perf_counter()
        body = rules_on_body(datetime.now(UTC)) if on else RULES_OFF
        r = httpx.put(
            f"{self.base_url}/api/admin/calling-rules",
            json=body,
            headers={"Authorization": f"Bearer {self.supervisor_token}"},
            timeout=30,
        )
        if r.status_code != 200 or not r.json()["open_now"]:
            raise SystemExit(f"PUT /api/admin/calling-rules: {r.status_code} {r.text[:300]}")
        replace_suppression_list(self.store_url, self.hashes if on else [], self.fingerprint)
        count = httpx.get(
            f"{self.base_url}/api/admin/suppression",
            headers={"Authorization": f"Bearer {self.supervisor_token}"},
            timeout=30,
        ).json()["count"]
        expected = len(self.hashes) if on else 0
        if count != expected:
            raise SystemExit(f"the suppression list holds {count:,}, not {expected:,}")
        if on:
            # The server hashes with the same key: one of the numbers is already on its list
            # (and its key matches the fingerprint recorded above, or this is a 409).
            r = httpx.post(
                f"{self.base_url}/api/admin/suppression",
                json={"phones": [f"{SUPPRESSED_PREFIX}00000"]},
                headers={"Authorization": f"Bearer {self.supervisor_token}"},
                timeout=30,
            )
            if r.status_code != 200 or r.json()["already_present"] != 1:
                raise SystemExit(f"the server's key hashes otherwise: {r.status_code} {r.text}")
        print(
            f"    rules {'on' if on else 'off'}: hours {body['hours']!r},"
            f" {len(body['holidays'])} holidays, {count:,} suppressed numbers"
            f" ({time.perf_counter() - t0:.1f} s)"
        )

    def _reasons(self) -> tuple[Counter[str], int]:
        """entry_invalidations by reason so far, and the queue's pending entries."""
        with psycopg.connect(libpq_url(self.store_url), autocommit=True) as conn:
            rows = conn.execute(
                "SELECT reason, count(*) FROM entry_invalidations GROUP BY reason"
            ).fetchall()
            pending = conn.execute(f"SELECT count(*) FROM {TABLE} WHERE status = 'pending'")
            left = int(pending.fetchone()[0])  # type: ignore[index]
        return Counter({str(reason): int(n) for reason, n in rows}), left

    def start(self) -> None:
        self._seen, left = self._reasons()
        print(f"    pending entries before the first run: {left:,}")

    def count_invalidations(self, on: bool, _: tuple[ModeResult, ModeResult]) -> None:
        """The run's entry_invalidations by reason (suppressed and attempt_cap must be 0)."""
        now, left = self._reasons()
        run = now - self._seen
        self._seen = now
        self.invalidations[on] += run
        print(
            f"    invalidations in the run: {dict(run) or 'none'}; pending entries left: {left:,}"
        )


def compare_rules(
    bench: ClaimsBench,
    gen: LoadGenerator,
    switch: RulesSwitch,
    *,
    rounds: int,
    rate: float,
    rate_seconds: float,
    flat_seconds: float,
) -> Runs:
    """The same workload with the calling rules off and on, alternating; the rules off again
    afterwards."""
    print(
        f"\nCalling rules (issue 14): off = hours 'always', no holidays, empty suppression list;"
        f" on = hours {RULES_ON_HOURS!r}, holiday dates, {len(switch.hashes):,} suppressed"
        f" numbers (none a bench user's); caps at the defaults in both; {rounds} rounds of"
        f" {rate:g} cycles/s for {rate_seconds:g} s then flat out for {flat_seconds:g} s, off"
        " and on, alternating"
    )
    switch.start()
    runs = alternating_runs(
        gen,
        bench.measured,
        switch.store_url,
        labels=("rules off", "rules on"),
        tables=f"{TABLE}, assignments, user_call_scores, entry_invalidations, suppressed_numbers",
        rounds=rounds,
        rate=rate,
        rate_seconds=rate_seconds,
        flat_seconds=flat_seconds,
        switch=switch,
        after=switch.count_invalidations,
    )
    switch(False)
    return runs


def print_rules_summary(runs: Runs, base_rate: float, switch: RulesSwitch) -> bool:
    """The comparison issue 14 asks for; False when it misses, or when a hand-out was turned
    down for suppression or a cap or the queue ran dry in a run (not like for like)."""
    print(
        f"\nCALLING RULES  on: hours {RULES_ON_HOURS!r} + holidays + {len(switch.hashes):,}"
        " suppressed numbers; off: hours 'always', empty list; caps at the defaults in both;"
        " per mode: every run's figure, then pooled (p99 over all the paced runs' next-user"
        " latencies, flat out as the mean of the runs)"
    )

    def refusals(on: bool, pairs: list[tuple[ModeResult, ModeResult]]) -> str:
        empty = sum(p.empty + f.empty for p, f in pairs)
        inv = switch.invalidations[on]
        return f"{inv['suppressed']} / {inv['attempt_cap']} / {empty}"

    met = print_alternating_summary(
        runs,
        base_rate,
        ("rules off", "rules on"),
        "on / off",
        "suppressed / capped / 204 empty",
        refusals,
    )
    spoiled = sum(
        switch.invalidations[on]["suppressed"] + switch.invalidations[on]["attempt_cap"]
        for on in (False, True)
    ) + sum(p.empty + f.empty for on in (False, True) for p, f in runs[on])
    print(
        f"hand-outs refused for suppression or a cap, or 204 (queue dry), in the compared runs:"
        f" {spoiled} ({'OK' if spoiled == 0 else 'NOT like for like'})"
    )
    return met and spoiled == 0


def main(argv: list[str] | None = None) -> int:
    from app.rules.suppression import SuppressionList

    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    add_arguments(parser, "10,000 entries, 5 s per run")
    add_timing_arguments(parser)
    parser.add_argument(
        "--suppressed", type=int, default=SUPPRESSED_NUMBERS, help="numbers on the list, rules on"
    )
    parser.add_argument("--rules-rate", type=float, default=50.0, help="paced rate compared")
    parser.add_argument(
        "--rules-rounds", type=int, default=2, help="pairs of runs, alternating (ABBA...)"
    )
    args = parser.parse_args(argv)
    timing = Timing.from_args(args)

    bench = ClaimsBench(args, STORE_DB, REPLICA_DB)
    bench.prepare()
    [supervisor] = create_agents(bench.store_url, 1, "supervisor", "bench-supervisor")
    with step(f"hash {args.suppressed:,} numbers for the suppression list"):
        hashes = suppression_hashes(SUPPRESSION_KEY, args.suppressed)
    bench.settle()
    with bench.serving() as gen:
        assert bench.server is not None
        switch = RulesSwitch(
            bench.server.base_url,
            supervisor,
            bench.store_url,
            hashes,
            SuppressionList(SUPPRESSION_KEY.encode()).fingerprint,
        )
        runs = compare_rules(
            bench,
            gen,
            switch,
            rounds=args.rules_rounds,
            rate=args.rules_rate,
            rate_seconds=timing.rate_seconds,
            flat_seconds=timing.flat_seconds,
        )
    dup, ledger = bench.check_duplicates()
    base = bench.run_baseline(timing.baseline_seconds)
    bench.finish()

    bench.summary_head("calling rules: ")
    print_rules_summary(runs, base["rate"], switch)
    print_duplicate_verdict(duplicate_total(dup, ledger))
    print(bench.elapsed())
    return 0


if __name__ == "__main__":
    sys.exit(main())
