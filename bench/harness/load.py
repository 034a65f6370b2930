"""The agents: 64 dashboards over real HTTP, each one ``aiohttp.ClientSession`` (one keep-alive
connection), on uvloop when it is installed.

A cycle is ``POST /api/queues/unsigned_users/next-user`` then ``POST
/api/assignments/{id}/complete`` with ``{"outcome": "no_answer"}`` (or, for a share of them,
``call_back`` with a ``callback_at``). Modes: a warm-up (one cycle per agent, not counted); a fixed
rate (open loop: cycle k starts at k / rate on agent k mod 64, late when that agent is still busy;
cycles more than 1.25x the duration behind schedule are not started); paced at a rate until
something run beside it is done; flat out (every agent back to back); the HTTP floor (``GET
/healthz``); one agent alone. Every hand-out is kept for the duplicate checks, every request's
start, latency and status for the per-window figures.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp

from bench.harness.seed import QUEUE
from bench.harness.server import Server


@dataclass
class Handout:
    user_id: int
    assignment_id: str
    agent: int
    received: float
    released: float = float("inf")  # when the agent sent complete (inner bound of the hold)
    resumed: bool = False
    source: str = "queue"


@dataclass
class ModeResult:
    name: str
    seconds: float
    cycles: int = 0
    next_ms: list[float] = field(default_factory=list)
    complete_ms: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # first error body per status
    late: int = 0
    dropped: int = 0
    empty: int = 0
    cpu: dict[str, Any] = field(default_factory=dict)
    server: dict[str, tuple[float, float]] = field(default_factory=dict)  # metric: (sum, count)
    peak_connections: tuple[int, int] = (0, 0)
    # Callbacks: the share of completions that book one, how many asked to, how many the service
    # booked, and how many next-user answers served one.
    callback_share: float = 0.0
    callbacks_asked: int = 0
    callbacks_booked: int = 0
    callback_handouts: int = 0
    # Every request: (route, sent at (time.perf_counter), ms, status or "transport <error>").
    requests: list[tuple[str, float, float, str]] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds if self.seconds else 0.0

    def non_2xx(self) -> str:
        bad = {k: v for k, v in self.statuses.items() if not k.split()[-1].startswith("2")}
        bad.update({f"transport {k}": v for k, v in self.errors.items()})
        return ", ".join(f"{k}: {v}" for k, v in sorted(bad.items())) or "none"


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


class LoadGenerator:
    """64 dashboards over real HTTP, on aiohttp: its C-accelerated HTTP parser costs a third of
    httpx's CPU per request, and the load generator shares the two CPUs with the service."""

    def __init__(
        self, base_url: str, credentials: list[dict[str, str]], callback_delay: float = 5.0
    ) -> None:
        self.base_url = base_url
        # Each agent's headers: a bearer token, or a session's cookie and CSRF token.
        self.credentials = credentials
        self.clients: list[aiohttp.ClientSession] = []
        self.agents = len(credentials)
        self.handouts: list[Handout] = []
        self.next_path = f"/api/queues/{QUEUE}/next-user"
        # How far ahead a booked callback falls due, and when the last one booked does.
        self.callback_delay = callback_delay
        self.last_callback_due = 0.0

    def _open(self) -> None:
        # One session with one keep-alive connection per agent, as 64 dashboards would have.
        # Sessions belong to the running event loop, so they are opened on first use.
        if not self.clients:
            self.clients = [
                aiohttp.ClientSession(
                    base_url=self.base_url,
                    timeout=aiohttp.ClientTimeout(total=60.0),
                    connector=aiohttp.TCPConnector(limit=1),
                    headers=headers,
                )
                for headers in self.credentials
            ]

    def _outcome(self, result: ModeResult) -> dict[str, str]:
        """The completion's body: ``no_answer``, or for ``result.callback_share`` of the
        hand-outs (spread evenly: the n-th of the mode books one when floor(n x share) steps
        up) ``call_back`` with a ``callback_at`` ``callback_delay`` seconds ahead."""
        handed_out = result.statuses["next-user 200"]
        if int(handed_out * result.callback_share) <= result.callbacks_asked:
            return {"outcome": "no_answer"}
        result.callbacks_asked += 1
        due = datetime.now(UTC) + timedelta(seconds=self.callback_delay)
        self.last_callback_due = max(self.last_callback_due, time.time() + self.callback_delay)
        return {"outcome": "call_back", "callback_at": due.isoformat()}

    async def cycle(
        self, agent: int, result: ModeResult, deadline: float | None = None
    ) -> str | None:
        """One next-user then complete; the source of the hand-out (None: nobody handed out)."""
        client = self.clients[agent]
        t0 = time.perf_counter()
        try:
            async with client.post(self.next_path) as r:
                status, raw = r.status, await r.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            result.errors[f"next-user {type(exc).__name__}"] += 1
            ms = (time.perf_counter() - t0) * 1000
            result.requests.append(("next-user", t0, ms, f"transport {type(exc).__name__}"))
            return None
        t1 = time.perf_counter()
        result.next_ms.append((t1 - t0) * 1000)
        result.requests.append(("next-user", t0, (t1 - t0) * 1000, str(status)))
        result.statuses[f"next-user {status}"] += 1
        if status == 204:
            result.empty += 1
            return None
        if status != 200:
            result.samples.setdefault(f"next-user {status}", raw[:300].decode(errors="replace"))
            return None
        body = json.loads(raw)
        handout = Handout(body["user_id"], body["assignment_id"], agent, t1)
        handout.resumed = bool(body["resumed"])
        handout.source = str(body["source"])
        if handout.source == "callback":
            result.callback_handouts += 1
        self.handouts.append(handout)
        outcome = self._outcome(result)
        handout.released = t2 = time.perf_counter()
        try:
            async with client.post(
                f"/api/assignments/{body['assignment_id']}/complete", json=outcome
            ) as r2:
                status, raw = r2.status, await r2.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            handout.released = float("inf")
            result.errors[f"complete {type(exc).__name__}"] += 1
            ms = (time.perf_counter() - t2) * 1000
            result.requests.append(("complete", t2, ms, f"transport {type(exc).__name__}"))
            return handout.source
        t3 = time.perf_counter()
        result.requests.append(("complete", t2, (t3 - t2) * 1000, str(status)))
        result.statuses[f"complete {status}"] += 1
        if status != 200:
            handout.released = float("inf")
            result.samples.setdefault(f"complete {status}", raw[:300].decode(errors="replace"))
            return handout.source
        result.complete_ms.append((t3 - t2) * 1000)
        if "callback_at" in outcome:
            if json.loads(raw)["callback"] is not None:
                result.callbacks_booked += 1
            else:
                result.samples.setdefault("complete 200 without a callback", raw[:300].decode())
        if deadline is None or t3 <= deadline:
            result.cycles += 1
        return handout.source

    async def warm_up(self) -> None:
        self._open()
        result = ModeResult("warm-up", 0)
        await asyncio.gather(*(self.cycle(a, result) for a in range(self.agents)))
        if result.cycles != self.agents:
            raise SystemExit(f"warm-up failed: {dict(result.statuses)} {dict(result.errors)}")

    async def fixed_rate(
        self, rate: float, seconds: float, name: str = "", callback_share: float = 0.0
    ) -> ModeResult:
        """Open loop: cycle k starts at t0 + k / rate on agent k mod 64 (late if it is busy)."""
        result = ModeResult(name or f"{rate:g} cycles/s", seconds, callback_share=callback_share)
        n, agents = int(rate * seconds), self.agents
        t0 = time.perf_counter() + 0.05
        plan: list[list[float]] = [[] for _ in range(agents)]
        for k in range(n):
            plan[k % agents].append(t0 + k / rate)

        cutoff = t0 + seconds * 1.25  # a saturated server must not stretch the run for ever

        async def agent_loop(agent: int) -> None:
            for start in plan[agent]:
                delay = start - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif time.perf_counter() > cutoff:
                    result.dropped += 1
                    continue
                elif delay < -0.005:
                    result.late += 1
                await self.cycle(agent, result)

        await asyncio.gather(*(agent_loop(a) for a in range(agents)))
        result.seconds = time.perf_counter() - t0
        return result

    async def paced(self, rate: float, during: Callable[[], Any], name: str) -> ModeResult:
        """Open loop at ``rate``, as ``fixed_rate``, for as long as ``during`` runs (in a
        thread): no cycle starts after it returns; the cycles under way finish."""
        result = ModeResult(name, 0)
        agents = self.agents
        t0 = time.perf_counter() + 0.05
        done = False

        async def agent_loop(agent: int) -> None:
            k = agent
            while True:
                delay = t0 + k / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif delay < -0.005:
                    result.late += 1
                if done:
                    return
                await self.cycle(agent, result)
                k += agents

        tasks = [asyncio.create_task(agent_loop(a)) for a in range(agents)]
        try:
            await asyncio.to_thread(during)
        finally:
            done = True
            await asyncio.gather(*tasks)
        result.seconds = time.perf_counter() - t0
        return result

    async def flat_out(
        self,
        seconds: float,
        during: Callable[[], Any] | None = None,
        name: str = "flat out",
        callback_share: float = 0.0,
    ) -> ModeResult:
        """Closed loop: every agent cycles back to back; cycles finished in the window count."""
        result = ModeResult(name, seconds, callback_share=callback_share)
        t0 = time.perf_counter()
        deadline = t0 + seconds

        async def agent_loop(agent: int) -> None:
            while time.perf_counter() < deadline:
                await self.cycle(agent, result, deadline)

        tasks = [asyncio.create_task(agent_loop(a)) for a in range(self.agents)]
        if during is not None:
            await asyncio.to_thread(during)
        await asyncio.gather(*tasks)
        return result

    async def drain_callbacks(self, max_cycles: int = 20) -> ModeResult:
        """Serve the callbacks booked so far, so none is left for the next mode: wait until the
        last one is due, then every agent cycles (booking none) until next-user hands it
        something other than a callback (each agent's own come first). Not counted."""
        result = ModeResult("callback drain", 0)
        await asyncio.sleep(max(0.0, self.last_callback_due - time.time()) + 0.2)

        async def agent_loop(agent: int) -> None:
            for _ in range(max_cycles):
                if await self.cycle(agent, result) != "callback":
                    return

        t0 = time.perf_counter()
        await asyncio.gather(*(agent_loop(a) for a in range(self.agents)))
        result.seconds = time.perf_counter() - t0
        return result

    async def bare_http(self, seconds: float, agents: int | None = None) -> ModeResult:
        """The HTTP floor: GET /healthz (an async route, no I/O) back to back from every agent."""
        agents = agents or self.agents
        result = ModeResult("GET /healthz" if agents > 1 else "healthz alone", seconds)
        deadline = time.perf_counter() + seconds

        async def agent_loop(agent: int) -> None:
            client = self.clients[agent]
            while True:
                t0 = time.perf_counter()
                async with client.get("/healthz") as r:
                    status = r.status
                    await r.read()
                t1 = time.perf_counter()
                if t1 > deadline:
                    return
                result.next_ms.append((t1 - t0) * 1000)
                result.statuses[f"healthz {status}"] += 1
                result.cycles += 1

        await asyncio.gather(*(agent_loop(a) for a in range(agents)))
        return result

    async def sequential(self, cycles: int) -> ModeResult:
        result = ModeResult("one agent alone", 0)
        t0 = time.perf_counter()
        for _ in range(cycles):
            await self.cycle(0, result)
        result.seconds = time.perf_counter() - t0
        return result

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients))


def stop_load(
    runner: asyncio.Runner, gen: LoadGenerator, server: Server
) -> tuple[list[Handout], list[str]]:
    """Close the agents' connections and stop the server: the hand-outs the agents saw, for the
    duplicate checks, and the summary of the server's log."""
    runner.run(gen.close())
    handouts = list(gen.handouts)
    server.stop()
    return handouts, server.log_summary()


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's event loop for ``asyncio.Runner`` when installed (uvicorn[standard] has it)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop  # type: ignore[no-any-return]
