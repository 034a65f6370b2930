"""The lines every claims benchmark prints the same way (one measured mode, its CPU, the
duplicate checks), so figures from different scripts and sessions compare."""

from __future__ import annotations

import os
import statistics
from typing import Any

from bench.harness.load import ModeResult, pct


def cpu_line(cpu: dict[str, Any], cycles: int) -> str:
    if not cpu or not cycles:
        return ""
    wall = cpu["wall"]

    def part(key: str) -> str:
        return f"{key} {1000 * cpu[key] / cycles:.2f} ms ({100 * cpu[key] / (2 * wall):.0f}%)"

    keys = ["workers", "pg", "loadgen", "profiler", "other"]
    keys = [k for k in keys if k != "profiler" or cpu["profiler"] > 0]
    busy = 100 * cpu["machine"] / ((os.cpu_count() or 2) * wall)
    split = " + ".join(f"{1000 * w / cycles:.2f}" for w in cpu.get("per_worker", []))
    return (
        f"CPU per cycle: {', '.join(part(k) for k in keys)}; machine busy {busy:.0f}%"
        f" of {os.cpu_count()} CPUs" + (f"; per uvicorn process {split} ms" if split else "")
    )


def print_mode(result: ModeResult, dbs: tuple[str, str]) -> None:
    print(
        f"  {result.name}: {result.cycles:,} cycles in {result.seconds:.1f} s ="
        f" {result.rate:.1f} cycles/s; next-user p50 {pct(result.next_ms, 50):.1f}"
        f" p95 {pct(result.next_ms, 95):.1f} p99 {pct(result.next_ms, 99):.1f}"
        f" max {max(result.next_ms, default=float('nan')):.1f} ms; complete p50"
        f" {pct(result.complete_ms, 50):.1f} p99 {pct(result.complete_ms, 99):.1f} ms"
    )
    extras = [f"non-2xx: {result.non_2xx()}"]
    for status, sample in result.samples.items():
        extras.append(f"first {status} body: {sample}")
    if result.late:
        extras.append(f"late starts (agent still busy): {result.late}")
    if result.dropped:
        extras.append(f"not started (over 1.25x the duration behind schedule): {result.dropped}")
    if result.empty:
        extras.append(f"204 empty: {result.empty}")
    if result.callback_share or result.callback_handouts:
        extras.append(
            f"callbacks booked {result.callbacks_booked} (of {result.callbacks_asked} asked),"
            f" handed out {result.callback_handouts}"
        )
    print("    " + "; ".join(extras))
    server = result.server
    if server.get("next-user route", (0, 0))[1]:

        def mean(key: str) -> float:
            total, n = server.get(key, (0.0, 0.0))
            return 1000 * total / n if n else float("nan")

        nu_client = statistics.fmean(result.next_ms) if result.next_ms else float("nan")
        cp_client = statistics.fmean(result.complete_ms) if result.complete_ms else float("nan")
        nu_route, cp_route = mean("next-user route"), mean("complete route")
        print(
            f"    means (ms): next-user at the client {nu_client:.1f} = in the app's middleware"
            f" {nu_route:.1f} (ClaimService.next_user {mean('ClaimService.next_user'):.1f},"
            f" the rest: auth, flags, threadpool hops, serialisation) + outside it (uvicorn,"
            f" event loop, network, aiohttp) {nu_client - nu_route:.1f}; complete at the client"
            f" {cp_client:.1f} = middleware {cp_route:.1f} + outside {cp_client - cp_route:.1f}"
        )
    if result.cpu:
        cpu = result.cpu
        print("    " + cpu_line(cpu, result.cycles))
        store, replica = dbs
        per = max(result.cycles, 1)
        print(
            f"    transactions per cycle: store {cpu[f'xacts:{store}'] / per:.1f}, replica"
            f" {cpu[f'xacts:{replica}'] / per:.1f}; new server sessions: store"
            f" {cpu[f'sessions:{store}']}, replica {cpu[f'sessions:{replica}']}; peak connections"
            f" {result.peak_connections[1]} ours / {result.peak_connections[0]} on the server"
        )


def print_agents(dup: dict[str, int], ledger: dict[str, int]) -> None:
    """The duplicate checks' figures, from the agents' side and the ledger."""
    print("\nDuplicates seen by the agents (all modes):")
    print("  " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in dup.items()))
    print("  ledger: " + ", ".join(f"{k.replace('_', ' ')}: {v:,}" for k, v in ledger.items()))


def print_duplicate_verdict(total: int) -> None:
    print(f"duplicates (agents' side + ledger): {total} ({'OK' if total == 0 else 'FAILED'})")
