"""A/B comparisons: the same workload with a variant off and on, alternating (ABBA: off, on, on,
off, ...) so that drift on the machine and in the tables falls on both; and their summary: p99
next-user latency at the paced rate pooled over the runs, the flat-out rate as the mean of the
runs and its ratio to the raw-SQL baseline, CPU per flat-out cycle, then on / off and whether on
stays within 10% of off."""

from __future__ import annotations

import functools
import statistics
from collections.abc import Callable
from typing import Any

from bench.harness.db import maintain
from bench.harness.load import LoadGenerator, ModeResult, pct

TOLERANCE = 0.10  # "within 10% of the same run without" (issue 13: callbacks, issue 14: rules)
Runs = dict[bool, list[tuple[ModeResult, ModeResult]]]  # variant on? -> (paced, flat) runs


def alternating_runs(
    gen: LoadGenerator,
    measured: Callable[[Callable[[], Any]], ModeResult],
    store_url: str,
    *,
    labels: tuple[str, str],
    tables: str,
    rounds: int,
    rate: float,
    rate_seconds: float,
    flat_seconds: float,
    switch: Callable[[bool], None] | None = None,
    after: Callable[[bool, tuple[ModeResult, ModeResult]], None] | None = None,
    callback_share: float = 0.0,
) -> Runs:
    """The same workload with a variant off and on, alternating (ABBA: off, on, on, off, ...) so
    drift on the machine and in the tables falls on both. Before each run ``switch(on)`` sets the
    variant up and ``tables`` are VACUUMed; each run is ``rate`` cycles/s for ``rate_seconds``,
    then flat out for ``flat_seconds`` (with ``callback_share`` of the completions booking a
    callback when on); then ``after(on, (paced, flat))``. ``labels``: the runs' names, off, on."""
    runs: Runs = {False: [], True: []}
    for r in range(rounds):
        for on in (False, True) if r % 2 == 0 else (True, False):
            label = f"{labels[on]} {r + 1}"
            share = callback_share if on else 0.0
            if switch is not None:
                switch(on)
            maintain(store_url, tables)
            paced = measured(
                functools.partial(gen.fixed_rate, rate, rate_seconds, f"{rate:g}/s {label}", share)
            )
            flat = measured(
                functools.partial(
                    gen.flat_out, flat_seconds, name=f"flat {label}", callback_share=share
                )
            )
            runs[on].append((paced, flat))
            if after is not None:
                after(on, (paced, flat))
    return runs


def print_alternating_summary(
    runs: Runs,
    base_rate: float,
    names: tuple[str, str],
    versus: str,
    extra_header: str,
    extra: Callable[[bool, list[tuple[ModeResult, ModeResult]]], str],
) -> bool:
    """Per variant (off, on): every run's figure, then pooled (p99 over all the paced runs'
    next-user latencies, flat out as the mean of the runs), the ratio to the raw baseline and the
    CPU per flat-out cycle, then on / off; whether on stays within TOLERANCE of off."""
    header = (
        f"{'mode':<18}{'p99 at pace (ms)':<24}{'cp p99':>8}  {'flat out (cycles/s)':<24}"
        f"{'ratio':>7}{'CPU ms/cycle':>14}  {extra_header}"
    )
    print(header)
    print("-" * len(header))
    pooled: dict[bool, tuple[float, float]] = {}
    cpu_ms: dict[bool, float] = {}
    for on in (False, True):
        pairs = runs[on]
        paced_ms = [v for paced, _ in pairs for v in paced.next_ms]
        complete_ms = [v for paced, _ in pairs for v in paced.complete_ms]
        p99 = pct(paced_ms, 99)
        flat_rate = statistics.fmean(flat.rate for _, flat in pairs)
        ratio = flat_rate / base_rate if base_rate == base_rate and base_rate else float("nan")
        pooled[on] = (p99, ratio)
        # Flat out, workers + PostgreSQL + load generator: what the machine's other work
        # disturbs less than the rates (the CPU-bound ceilings of the main summary).
        cpu_ms[on] = (
            1000
            * sum(f.cpu["workers"] + f.cpu["pg"] + f.cpu["loadgen"] for _, f in pairs)
            / max(sum(f.cycles for _, f in pairs), 1)
        )
        p99_runs = " ".join(f"{pct(p.next_ms, 99):.1f}" for p, _ in pairs)
        flat_runs = " ".join(f"{f.rate:.1f}" for _, f in pairs)
        print(
            f"{names[on]:<18}{f'{p99_runs} -> {p99:.1f}':<24}{pct(complete_ms, 99):>8.1f}  "
            f"{f'{flat_runs} -> {flat_rate:.1f}':<24}{ratio:>7.3f}"
            f"{cpu_ms[on]:>14.2f}  {extra(on, pairs)}"
        )
    print(f"{'raw baseline':<18}{'':<24}{'':>8}  {base_rate:<24.1f}")
    print("-" * len(header))
    (p99_off, ratio_off), (p99_on, ratio_on) = pooled[False], pooled[True]
    met = p99_on <= p99_off * (1 + TOLERANCE) and ratio_on >= ratio_off * (1 - TOLERANCE)
    print(
        f"{versus}: p99 at pace x{p99_on / p99_off:.3f}, flat-out ratio"
        f" x{ratio_on / ratio_off:.3f} (within {TOLERANCE:.0%}: {'met' if met else 'MISSED'});"
        f" CPU per flat-out cycle x{cpu_ms[True] / cpu_ms[False]:.3f}"
    )
    return met
