"""CPU and connections: who spent the machine's CPU during a mode, and how many connections the
server held. Read from /proc and the statistics views; the bench server must be local."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.harness.db import libpq_url

CLK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a process so far; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def proc_children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def machine_busy() -> float:
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLK


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def backend_ticks(dbs: tuple[str, ...]) -> dict[int, int]:
    """CPU clock ticks so far of each PostgreSQL backend serving one of ``dbs``, found by its
    process title; a backend's ticks vanish with it (sample often when backends come and go)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().decode(errors="replace")
            if not title.startswith("postgres:") or not any(f" {db} " in title for db in dbs):
                continue
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            found[int(entry)] = int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, IndexError, ValueError):
            continue
    return found


class Accounting:
    """CPU seconds of the workers, our databases' backends, this process and the machine."""

    def __init__(self, monitor_url: str, dbs: tuple[str, ...]) -> None:
        self.conn = psycopg.connect(libpq_url(monitor_url), autocommit=True)
        self.dbs = list(dbs)
        self.worker_pids: list[int] = []

    def backends(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = ANY(%s) AND pid <> pg_backend_pid()",
            (self.dbs,),
        ).fetchall()
        return [r[0] for r in rows]

    def db_counters(self) -> dict[str, tuple[int, int]]:
        self.conn.execute("SELECT pg_stat_clear_snapshot()")
        rows = self.conn.execute(
            "SELECT datname, sessions, xact_commit + xact_rollback FROM pg_stat_database"
            " WHERE datname = ANY(%s)",
            (self.dbs,),
        ).fetchall()
        return {r[0]: (int(r[1]), int(r[2])) for r in rows}

    def snapshot(self) -> dict[str, Any]:
        backends = {pid: proc_cpu(pid) or 0.0 for pid in self.backends()}
        return {
            "t": time.perf_counter(),
            "machine": machine_busy(),
            "workers": [proc_cpu(p) or 0.0 for p in self.worker_pids],
            "children": os.times().children_user + os.times().children_system,
            "self": time.process_time(),
            "backends": backends,
            "db": self.db_counters(),
        }

    def delta(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        pg = sum(cpu - a["backends"].get(pid, 0.0) for pid, cpu in b["backends"].items())
        out = {
            "wall": b["t"] - a["t"],
            "machine": b["machine"] - a["machine"],
            "workers": sum(b["workers"]) - sum(a["workers"]),
            "per_worker": [y - x for x, y in zip(a["workers"], b["workers"], strict=True)],
            "pg": pg,
            "loadgen": b["self"] - a["self"],
            "profiler": b["children"] - a["children"],
            "churned": len(set(a["backends"]) - set(b["backends"])),
        }
        out["other"] = out["machine"] - sum(
            out[k] for k in ("workers", "pg", "loadgen", "profiler")
        )
        for db in self.dbs:
            s0, x0 = a["db"].get(db, (0, 0))
            s1, x1 = b["db"].get(db, (0, 0))
            out[f"sessions:{db}"] = s1 - s0
            out[f"xacts:{db}"] = x1 - x0
        return out

    def close(self) -> None:
        self.conn.close()


class ConnectionSampler:
    """Peak server connections (all databases, and ours) sampled every 250 ms."""

    def __init__(self, monitor_url: str, dbs: tuple[str, ...]) -> None:
        self.url = libpq_url(monitor_url)
        self.dbs = list(dbs)
        self.peak_total = self.peak_ours = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.peak_total = self.peak_ours = 0
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self._stop.is_set():
                total, ours = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE datname = ANY(%s))"
                    " FROM pg_stat_activity WHERE backend_type = 'client backend'",
                    (self.dbs,),
                ).fetchone()  # type: ignore[misc]
                self.peak_total = max(self.peak_total, total)
                self.peak_ours = max(self.peak_ours, ours)
                self._stop.wait(0.25)

    def stop(self) -> tuple[int, int]:
        self._stop.set()
        if self._thread:
            self._thread.join()
        return self.peak_total, self.peak_ours
