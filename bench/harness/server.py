"""The service as a real server: ``uvicorn app.main:app --workers N --no-access-log
--timeout-keep-alive 75`` on a free port, as ``callqueue serve`` runs it (validation on, scheduler
off, ``LOG_LEVEL=WARNING``, ``MALLOC_ARENA_MAX``, ``PROMETHEUS_MULTIPROC_DIR`` in a temporary
directory), in its own process group so that stopping it stops its workers and only them. Also
its ``/metrics`` timings and the cron route that runs a population."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness.accounting import proc_children

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
CRON_SECRET = "bench-claims-cron-secret-0123456789abcdefXYZ"
# The server's SUPPRESSION_KEY, which the rules comparison hashes its suppression list with.
SUPPRESSION_KEY = "bench-claims-suppression-key-0123456789abcdefXYZ"
KEEP_ALIVE_SECONDS = 75
NEXT_ROUTE = "/api/queues/{queue_type}/next-user"
COMPLETE_ROUTE = "/api/assignments/{assignment_id}/complete"
CRON_POPULATE = "/api/cron/populate-separated-queues"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, env: dict[str, str], port: int, workers: int, log: Path) -> None:
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_file = log.open("w")
        self.proc = subprocess.Popen(
            [
                str(VENV_BIN / "uvicorn"),
                "app.main:app",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                str(workers),
                "--log-level",
                "warning",
                "--no-access-log",
                # Longer than the agents' idle gaps at 10 cycles/s (6.4 s), as behind a load
                # balancer: uvicorn's default of 5 s races the client's reuse of the connection.
                "--timeout-keep-alive",
                str(KEEP_ALIVE_SECONDS),
            ],
            cwd=ROOT,
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: we stop it, its workers and only it
        )

    def wait_ready(self, workers: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"uvicorn exited with status {self.proc.returncode}")
            try:
                ok = httpx.get(f"{self.base_url}/readyz", timeout=2).status_code == 200
            except httpx.HTTPError:
                ok = False
            if ok and len(self.workers()) >= workers:
                time.sleep(1.0)  # let the second worker finish its start-up too
                return
            time.sleep(0.2)
        raise SystemExit("the server did not become ready")

    def workers(self) -> list[int]:
        """The worker processes (not multiprocessing's resource tracker)."""
        found = []
        for pid in proc_children(self.proc.pid):
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"spawn_main" in cmdline:
                found.append(pid)
        return found

    def connections_per_worker(self) -> list[int]:
        """Established client connections each worker holds on the listening port."""
        inodes: set[str] = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with contextlib.suppress(OSError):
                for line in Path(table).read_text().splitlines()[1:]:
                    parts = line.split()
                    if parts[3] == "01" and int(parts[1].rsplit(":", 1)[1], 16) == self.port:
                        inodes.add(parts[9])
        counts = []
        for pid in self.workers():
            n = 0
            with contextlib.suppress(OSError):
                for fd in Path(f"/proc/{pid}/fd").iterdir():
                    with contextlib.suppress(OSError):
                        target = os.readlink(fd)
                        n += target.startswith("socket:[") and target[8:-1] in inodes
            counts.append(n)
        return counts

    def log_summary(self) -> list[str]:
        """Counts of the server's log lines by level, and the first line of each kind."""
        levels: Counter[str] = Counter()
        first: dict[str, str] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            m = re.search(r"\b(DEBUG|INFO|WARNING|ERROR|CRITICAL)\b\s+(\S+)\s+(\S+)", line)
            if not m:
                continue
            levels[m.group(1)] += 1
            first.setdefault(f"{m.group(1)} {m.group(2)} {m.group(3)}", line[:200])
        if not levels:
            return ["  server log: no warnings or errors"]
        out = ["  server log: " + ", ".join(f"{k} {v}" for k, v in levels.most_common())]
        out += [f"    e.g. {line}" for line in list(first.values())[:6]]
        return out

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        self._log_file.close()


def server_env(
    store_url: str, replica_url: str, pool_size: int, max_overflow: int, prom_dir: str
) -> dict[str, str]:
    from app.cli.serve import MALLOC_ARENAS
    from app.config import Settings

    ours = {name.upper() for name in Settings.model_fields} | {"PROMETHEUS_MULTIPROC_DIR"}
    env = {k: v for k, v in os.environ.items() if k.upper() not in ours}
    env.update(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        CRON_SECRET=CRON_SECRET,
        SUPPRESSION_KEY=SUPPRESSION_KEY,
        APP_ENV="test",
        SCHEDULER_ENABLED="false",
        LOG_LEVEL="WARNING",
        DB_POOL_SIZE=str(pool_size),
        DB_MAX_OVERFLOW=str(max_overflow),
        PROMETHEUS_MULTIPROC_DIR=prom_dir,
        # The benchmark runs at any hour: the calling window is always open.
        CALLING_HOURS="always",
        # As `callqueue serve` and the Docker image run the workers.
        MALLOC_ARENA_MAX=MALLOC_ARENAS,
    )
    return env


def start_server(
    store_url: str,
    replica_url: str,
    prom_dir: str,
    *,
    workers: int = 2,
    pool_size: int = 10,
    max_overflow: int = 0,
    extra_env: dict[str, str] | None = None,
) -> Server:
    """Start uvicorn as ``main`` does (``extra_env`` overrides settings) and wait until ready."""
    env = server_env(store_url, replica_url, pool_size, max_overflow, prom_dir)
    env.update(extra_env or {})
    server = Server(env, free_port(), workers, Path(prom_dir) / "uvicorn.log")
    try:
        server.wait_ready(workers)
    except BaseException:
        server.stop()
        raise
    return server


def scrape(base_url: str) -> dict[str, tuple[float, float]]:
    """Sums and counts of the server's own timings (all workers, PROMETHEUS_MULTIPROC_DIR)."""
    from prometheus_client.parser import text_string_to_metric_families

    wanted = {
        ("callqueue_http_request_duration_seconds", NEXT_ROUTE): "next-user route",
        ("callqueue_http_request_duration_seconds", COMPLETE_ROUTE): "complete route",
        ("callqueue_next_user_seconds", None): "ClaimService.next_user",
    }
    found: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    body = httpx.get(f"{base_url}/metrics", timeout=30).text
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if not sample.name.endswith(("_sum", "_count")):
                continue
            base = sample.name.rsplit("_", 1)[0]
            key = wanted.get((base, sample.labels.get("route")))
            if key is None:
                continue
            found[key][0 if sample.name.endswith("_sum") else 1] += sample.value
    return {k: (v[0], v[1]) for k, v in found.items()}


def server_delta(
    a: dict[str, tuple[float, float]], b: dict[str, tuple[float, float]]
) -> dict[str, tuple[float, float]]:
    return {k: (b[k][0] - a.get(k, (0, 0))[0], b[k][1] - a.get(k, (0, 0))[1]) for k in b}


@dataclass
class PopulationCall:
    """One population through the cron route: its HTTP status (0: no answer), when it was sent
    (``time.perf_counter``), how long it took, and the run's report (the body) when it ran."""

    status: int
    started: float
    seconds: float
    body: dict[str, Any] = field(default_factory=dict)
    error: str = ""

    def describe(self) -> str:
        if self.status != 200:
            return self.error
        queues = self.body.get("queues", {})
        return ", ".join(f"{q} {v.get('populated', 0):,}" for q, v in queues.items())


def populate_over_http(
    base_url: str, queue: str | None = None, timeout: float = 600
) -> PopulationCall:
    """``GET /api/cron/populate-separated-queues`` (``?queue=`` when given) with the cron secret
    as the bearer token, as the scheduler's cron would; a 409 means one was already running."""
    t0 = time.perf_counter()
    try:
        r = httpx.get(
            f"{base_url}{CRON_POPULATE}",
            params={"queue": queue} if queue else None,
            headers={"Authorization": f"Bearer {CRON_SECRET}"},
            timeout=timeout,
        )
    except httpx.HTTPError as exc:
        return PopulationCall(0, t0, time.perf_counter() - t0, error=type(exc).__name__)
    seconds = time.perf_counter() - t0
    if r.status_code != 200:
        return PopulationCall(r.status_code, t0, seconds, error=r.text[:200])
    return PopulationCall(200, t0, seconds, body=r.json())
