"""The raw-SQL baseline: the floor a claim cycle is compared with. The queue is reset (every entry
back to ``pending``, the run's ledger emptied, VACUUM, CHECKPOINT), then 64 psycopg connections
(threads, autocommit) run flat out the bare ``UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP
LOCKED) RETURNING id`` then ``UPDATE ... SET status = 'completed'``. It writes the queue table
behind the service's back: it runs after the server has stopped."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import psycopg

from bench.harness.db import admin, libpq_url, maintain, step
from bench.harness.seed import TABLE

RESET_SQL = f"""
UPDATE {TABLE} SET status = 'pending', assigned_to_agent = NULL, assigned_at = NULL,
       invalid_reason = NULL, updated_at = now()
 WHERE status <> 'pending'
"""
BASELINE_CLAIM = f"""
UPDATE {TABLE} SET status = 'assigned', assigned_to_agent = %(a)s, assigned_at = now()
 WHERE id = (SELECT id FROM {TABLE} WHERE status = 'pending'
              ORDER BY queue_position, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id
"""
BASELINE_DONE = f"UPDATE {TABLE} SET status = 'completed' WHERE id = %(id)s"


def reset_queue(store_url: str) -> None:
    with step("reset the queue (entries back to pending, ledger emptied, VACUUM, CHECKPOINT)"):
        admin(store_url, [RESET_SQL, "DELETE FROM assignments", "DELETE FROM entry_invalidations"])
        maintain(store_url, f"{TABLE}, assignments, entry_invalidations")


def baseline(
    store_url: str, connections: int, seconds: float, snapshot: Callable[[], Any]
) -> dict[str, Any]:
    """Bare claim + complete from ``connections`` threads; ``snapshot`` is taken with every
    connection open, right before and right after the timed window."""
    url = libpq_url(store_url)
    counts = [0] * connections
    errors: Counter[str] = Counter()
    stop = threading.Event()
    ready = threading.Barrier(connections + 1)
    loop_done = threading.Barrier(connections + 1)
    release = threading.Event()
    ran_dry: list[float] = []

    def worker(i: int) -> None:
        try:
            conn = psycopg.connect(url, autocommit=True)
        except psycopg.Error as exc:
            errors[type(exc).__name__] += 1
            ready.abort()
            return
        with conn:
            try:
                ready.wait()
            except threading.BrokenBarrierError:
                return
            try:
                while not stop.is_set():
                    try:
                        row = conn.execute(BASELINE_CLAIM, {"a": i + 1}).fetchone()
                        if row is None:
                            ran_dry.append(time.perf_counter())
                            stop.set()
                            break
                        conn.execute(BASELINE_DONE, {"id": row[0]})
                    except psycopg.Error as exc:
                        errors[type(exc).__name__] += 1
                        continue
                    if not stop.is_set():
                        counts[i] += 1
            finally:
                with contextlib.suppress(threading.BrokenBarrierError):
                    loop_done.wait(60)
                release.wait(60)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(connections)]
    for t in threads:
        t.start()
    try:
        ready.wait()
    except threading.BrokenBarrierError:
        stop.set()
        for t in threads:
            t.join()
        return {"error": f"could not open {connections} connections: {dict(errors)}"}
    before = snapshot()
    t0 = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    t1 = min([time.perf_counter(), *ran_dry])
    with contextlib.suppress(threading.BrokenBarrierError):
        loop_done.wait(60)
    after = snapshot()
    release.set()
    for t in threads:
        t.join()
    total = sum(counts)
    return {
        "cycles": total,
        "seconds": t1 - t0,
        "rate": total / (t1 - t0),
        "errors": dict(errors),
        "ran_dry": bool(ran_dry),
        "before": before,
        "after": after,
    }
