"""Where one cycle's time goes without HTTP: the two routes' bodies replayed in this process, one
agent, after the server has stopped, timing each step (wall and CPU) and counting statements, pool
checkouts and commits per step. The steps are the services' methods, some private: one that was
merged or renamed drops out of the breakdown instead of failing the benchmark."""

from __future__ import annotations

import contextlib
import json
import statistics
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

from sqlalchemy import Engine, event, text

from bench.harness.seed import QUEUE
from bench.harness.server import SUPPRESSION_KEY


class StepProbe:
    """Wall time per step (wrapped functions), and statements, checkouts, commits per step."""

    def __init__(self) -> None:
        self.stack: list[str] = ["(outside)"]
        self.wall: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)
        self.stmts: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0, 0.0])
        self.checkouts: Counter[tuple[str, str]] = Counter()
        self.ends: Counter[tuple[str, str]] = Counter()
        self.restore: list[tuple[Any, str, Any]] = []
        self._t0: dict[int, float] = {}
        self.engines: dict[Any, str] = {}

    @contextlib.contextmanager
    def section(self, label: str) -> Iterator[None]:
        self.stack.append(label)
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            self.wall[label] += time.perf_counter() - t0
            self.cpu[label] += time.thread_time() - c0
            self.stack.pop()

    def wrap(self, owner: Any, name: str, label: str) -> None:
        import inspect

        raw = inspect.getattr_static(owner, name)
        is_static = isinstance(raw, staticmethod)
        original = getattr(owner, name)
        probe = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with probe.section(label):
                return original(*args, **kwargs)

        setattr(owner, name, staticmethod(wrapper) if is_static else wrapper)
        self.restore.append((owner, name, raw))

    def unwrap(self) -> None:
        for owner, name, raw in reversed(self.restore):
            setattr(owner, name, raw)
        self.restore.clear()

    def listen(self, engine: Engine, db: str) -> None:
        @event.listens_for(engine, "before_cursor_execute")
        def before(conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
            self._t0[id(cursor)] = time.perf_counter()

        @event.listens_for(engine, "after_cursor_execute")
        def after(conn: Any, cursor: Any, statement: Any, *args: Any) -> None:
            entry = self.stmts[(self.stack[-1], db)]
            entry[0] += 1
            entry[1] += time.perf_counter() - self._t0.pop(id(cursor), time.perf_counter())

        self.engines[engine.pool] = db  # an engine's execution_options() copies share its pool

        @event.listens_for(engine.pool, "checkout")
        def checkout(*args: Any) -> None:
            self.checkouts[(self.stack[-1], db)] += 1

        @event.listens_for(engine, "commit")
        def commit(*args: Any) -> None:
            self.ends[(self.stack[-1], db)] += 1

        @event.listens_for(engine, "rollback")
        def rollback(*args: Any) -> None:
            self.ends[(self.stack[-1], db)] += 1


def in_process_breakdown(
    store_url: str, replica_url: str, token: str, cycles: int
) -> tuple[float, list[str]]:
    """The HTTP routes' bodies replayed in this process, one agent, with every step timed."""
    import app.api.agents as api_agents
    from app.auth.identity import authenticate_token
    from app.config import load_settings
    from app.queues.assignments import AssignmentService
    from app.queues.claims import ClaimService
    from app.replica.reader import Replica
    from app.rules.calling import CallingWindow
    from app.rules.outcomes import Outcome
    from app.services import Services
    from app.vocabulary import QueueType

    settings = load_settings(
        database_url=store_url,
        replica_database_url=replica_url,
        app_env="test",
        log_level="WARNING",
        calling_hours="always",
        suppression_key=SUPPRESSION_KEY,
    )
    services = Services.build(settings)
    probe = StepProbe()
    probe.listen(services.engine, "store")
    probe.listen(services.replica.engine, "replica")
    wraps = [
        (ClaimService, "next_user", "N claim: next_user total"),
        (ClaimService, "_attempt", "N claim attempt"),
        (Replica, "fetch_claim_facts", "N claim attempt: replica facts + contact"),
        (AssignmentService, "complete", "C complete total"),
        (AssignmentService, "_verdict", "C replica classify"),
    ]
    queue = QueueType(QUEUE)
    try:
        # Warm the pools and the prepared-statement caches before timing.
        for _ in range(20):
            with services.autocommit.connect() as conn:
                found = authenticate_token(conn, token)
            claimed = services.claims.next_user(
                found.agent, queue, services.flags_for(found.flag_overrides)
            )
            assert claimed is not None
            services.assignments.complete(
                found.agent, claimed.assignment.id, Outcome.NO_ANSWER, None, None
            )
        with services.engine.connect() as conn:
            ping = []
            for _ in range(200):
                t0 = time.perf_counter()
                conn.execute(text("SELECT 1"))
                ping.append((time.perf_counter() - t0) * 1000)
        for owner, name, label in wraps:
            # The steps are the service's private methods: one that was merged or renamed is
            # left out of the breakdown rather than failing the benchmark.
            if hasattr(owner, name):
                probe.wrap(owner, name, label)
        probe.stmts.clear()
        probe.checkouts.clear()
        probe.ends.clear()
        t_start, c_start = time.perf_counter(), time.thread_time()
        for _ in range(cycles):
            with probe.section("N next-user total"):
                conn = services.autocommit.connect()
                with probe.section("N auth + flags"):
                    found = authenticate_token(conn, token)
                    flags = services.flags_for(found.flag_overrides)
                window = CallingWindow(services.calling_rules_for(found.calling_rules), found.now)
                claimed = services.claims.next_user(found.agent, queue, flags, conn, window)
                conn.close()
                assert claimed is not None
                with probe.section("N assignment view + JSON"):
                    json.dumps(
                        api_agents.assignment_view(
                            claimed.assignment, claimed.contact, resumed=claimed.resumed
                        )
                    )
            with probe.section("C complete route total"):
                conn = services.autocommit.connect()
                with probe.section("C auth"):
                    found = authenticate_token(conn, token, holding=True)
                done = services.assignments.complete(
                    found.agent,
                    claimed.assignment.id,
                    Outcome.NO_ANSWER,
                    None,
                    None,
                    conn,
                    window,
                    found.holding,
                )
                conn.close()
                with probe.section("C assignment view + JSON"):
                    json.dumps(
                        {
                            **api_agents.assignment_view(done.assignment, None),
                            "score": api_agents.score_view(done.score),
                        }
                    )
        elapsed = time.perf_counter() - t_start
        cpu_elapsed = time.thread_time() - c_start
    finally:
        probe.unwrap()
        services.dispose()

    def ms(label: str) -> float:
        return 1000 * probe.wall.get(label, 0.0) / cycles

    def cpu_ms(label: str) -> float:
        return 1000 * probe.cpu.get(label, 0.0) / cycles

    def counts(label: str, db: str) -> tuple[float, float, float, float]:
        n, secs = probe.stmts.get((label, db), [0, 0.0])
        return (
            n / cycles,
            1000 * secs / cycles,
            probe.checkouts.get((label, db), 0) / cycles,
            probe.ends.get((label, db), 0) / cycles,
        )

    # Exclusive wall per label = inclusive minus the wrapped labels nested inside it.
    nested = {
        "N next-user total": [
            "N auth + flags",
            "N claim: next_user total",
            "N assignment view + JSON",
        ],
        "N claim: next_user total": ["N claim attempt"],
        "N claim attempt": ["N claim attempt: replica facts + contact"],
        "C complete route total": ["C auth", "C complete total", "C assignment view + JSON"],
        "C complete total": ["C replica classify"],
    }
    rows: list[tuple[str, str]] = [
        ("N next-user total", "next-user route body (no HTTP)"),
        ("N auth + flags", "  authenticate: agent and flags (one statement)"),
        ("N claim: next_user total", "  ClaimService.next_user (one checkout)"),
        ("N claim attempt", "    attempt: cq_claim, replica, cq_hand_out, commit"),
        ("N claim attempt: replica facts + contact", "      replica read (one statement)"),
        ("N assignment view + JSON", "  assignment view + JSON"),
        ("C complete route total", "complete route body (no HTTP)"),
        ("C auth", "  authenticate, with the held assignment's head (one statement)"),
        ("C complete total", "  AssignmentService.complete: replica, cq_complete"),
        ("C replica classify", "    replica classify (one statement)"),
        ("C assignment view + JSON", "  assignment view + JSON"),
    ]
    out = [
        f"  {cycles} cycles, one agent, sequential, in this process: {1000 * elapsed / cycles:.2f}"
        f" ms per cycle ({1000 * cpu_elapsed / cycles:.2f} ms of it CPU in this process),"
        f" {1000 * (elapsed - cpu_elapsed) / cycles:.2f} ms waiting (databases, other processes);"
        f" a bare SELECT 1 round trip on the store: median"
        f" {statistics.median(ping):.3f} ms",
        "  ms: inclusive wall time per cycle; own: outside the nested rows (checkouts, BEGIN,"
        " COMMIT, Python); CPU ms: this process's CPU (Python, SQLAlchemy, psycopg), inclusive;"
        " statements (st), their ms, checkouts and commits are inclusive",
        f"  {'step':<56}{'ms':>7}{'own ms':>8}{'CPU ms':>8}{'store st':>9}{'st ms':>7}"
        f"{'replica st':>11}{'st ms':>7}{'checkouts':>10}{'commits':>8}",
    ]

    def subtree(label: str) -> list[str]:
        return [label, *(d for child in nested.get(label, []) for d in subtree(child))]

    def inclusive(label: str, db: str) -> tuple[float, ...]:
        parts = [counts(lab, db) for lab in subtree(label)]
        return tuple(sum(values) for values in zip(*parts, strict=True))

    for label, title in rows:
        own = ms(label) - sum(ms(child) for child in nested.get(label, []))
        s_n, s_ms, s_co, s_end = inclusive(label, "store")
        r_n, r_ms, r_co, _ = inclusive(label, "replica")
        out.append(
            f"  {title:<56}{ms(label):>7.2f}{own:>8.2f}{cpu_ms(label):>8.2f}{s_n:>9.1f}"
            f"{s_ms:>7.2f}{r_n:>11.1f}"
            f"{r_ms:>7.2f}{s_co + r_co:>10.1f}{s_end:>8.1f}"
        )
    total_stmts = sum(v[0] for (lab, db), v in probe.stmts.items() if db == "store") / cycles
    total_rep = sum(v[0] for (lab, db), v in probe.stmts.items() if db == "replica") / cycles
    total_co = sum(probe.checkouts.values()) / cycles
    total_end = sum(n for (lab, db), n in probe.ends.items() if db == "store") / cycles
    out.append(
        f"  per cycle: {total_stmts:.1f} store statements, {total_rep:.1f} replica statements,"
        f" {total_co:.1f} pool checkouts (store and replica), {total_end:.1f} store"
        f" COMMIT/ROLLBACKs (each a round trip, plus a BEGIN before the first statement)"
    )
    return 1000 * elapsed / cycles, out
