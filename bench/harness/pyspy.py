"""py-spy on both workers during a flat-out run (``--gil --subprocesses``, 200 Hz, raw output),
and its summary: samples by step of the cycle (the innermost app frame), named mechanisms, layers
of the leaf frame, top frames by own and cumulative time. py-spy is optional (``.venv/bin/pip
install py-spy``); without it the profile section says so."""

from __future__ import annotations

import re
import subprocess
from collections import Counter
from pathlib import Path

from bench.harness.server import ROOT, VENV_BIN

FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

# Innermost app frame decides the step; the route (next_user / complete) decides the side.
STEP_MARKERS: list[tuple[str, str, str]] = [
    ("app/replica/reader.py", "", "replica reads"),
    ("app/replica/classification.py", "", "replica reads"),
    ("app/queues/claims.py", "_invalidate", "claim: mark a failed source"),
    ("app/queues/claims.py", "_attempt", "claim attempt (cq_claim, cq_hand_out, commit)"),
    ("app/queues/claims.py", "_resume", "resume"),
    ("app/queues/claims.py", "_pending_left", "pending-left check"),
    ("app/queues/claims.py", "next_user", "claim metrics"),
    ("app/queues/leases.py", "", "lease sweep"),
    ("app/queues/assignments.py", "complete", "complete: cq_complete (head when not held)"),
    ("app/queues/views.py", "", "assignment view"),
    ("app/flags.py", "", "flags read"),
    ("app/services.py", "flags", "flags read"),
    ("app/agents.py", "", "auth"),
    ("app/api/deps.py", "current_agent", "auth"),
    ("app/main.py", "observe", "middleware (request id, metrics)"),
]
LAYERS = [
    ("psycopg", "psycopg (driver)"),
    ("sqlalchemy", "SQLAlchemy"),
    ("prometheus_client", "prometheus_client"),
    ("pydantic", "pydantic"),
    ("fastapi", "FastAPI"),
    ("starlette", "Starlette"),
    ("uvicorn", "uvicorn"),
    ("httptools", "uvicorn"),
    ("anyio", "anyio threadpool"),
    ("concurrent/futures", "threadpool"),
    ("threading.py", "threadpool"),
    ("asyncio", "asyncio"),
    ("/logging/", "logging"),
    ("json/", "json"),
    ("/app/", "app code"),
]


def parse_frame(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def short(func: str, file: str) -> str:
    path = file
    for marker in ("site-packages/", "lib/python3.11/", str(ROOT) + "/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{func} ({path})"


def classify_stack(frames: list[tuple[str, str]]) -> str:
    route = ""
    for func, file in frames:
        if file.endswith("app/api/agents.py") and func in ("next_user", "complete"):
            route = "next-user" if func == "next_user" else "complete"
    for func, file in reversed(frames):
        for suffix, name, label in STEP_MARKERS:
            if file.endswith(suffix) and (not name or func == name):
                if label.startswith("complete:") or not route:
                    return label
                return f"{route}: {label}"
    for func, file in reversed(frames):
        if file.endswith("app/api/agents.py"):
            return f"{route or 'route'}: route body"
        if "fastapi/routing.py" in file and func == "serialize_response":
            return "response model validation + JSON"
        if "fastapi/dependencies" in file or "fastapi/routing.py" in file:
            return "FastAPI request handling (deps, body, response)"
    return "HTTP server, ASGI, event loop, threadpool"


def layer_of(file: str) -> str:
    for marker, name in LAYERS:
        if marker in file:
            return name
    return "other"


# Mechanisms worth naming: label, substrings all required in the stack, substrings excluded.
HOT_SPOTS: list[tuple[str, tuple[str, ...], tuple[str, ...]]] = [
    ("threadpool dispatch on the event loop (run_in_threadpool)", ("run_in_threadpool",), ()),
    (
        "  of which for sync dependencies (get_services, current_agent, queue_type_path)",
        ("run_in_threadpool", "solve_dependencies ("),
        (),
    ),
    (
        "  of which for the response-model validation hop (serialize_response)",
        ("run_in_threadpool", "serialize_response ("),
        (),
    ),
    (
        "BaseHTTPMiddleware (app/main.py observe) outside the routed app",
        ("starlette/middleware/base.py",),
        ("starlette/routing.py",),
    ),
    ("FastAPI native telemetry check per request", ("NativeTelemetry.enabled",), ()),
    ("pool pre-ping on checkout (do_ping)", ("do_ping (",), ()),
    ("SQLAlchemy cache-key generation (Core select() per call)", ("_generate_cache_key",), ()),
    ("prometheus_client (metrics)", ("prometheus_client/",), ()),
]


def summarise_pyspy(path: Path, top: int = 18) -> list[str]:
    own: Counter[str] = Counter()
    cumulative: Counter[str] = Counter()
    steps: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    hot: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        n = int(count_text)
        parts = stack.split(";")
        frames = [parse_frame(p) for p in parts]
        frames = [f for f in frames if f[1]]  # drop process/thread headers
        if not frames:
            continue
        total += n
        leaf = frames[-1]
        own[short(*leaf)] += n
        layers[layer_of(leaf[1])] += n
        for key in {short(func, file) for func, file in frames}:
            cumulative[key] += n
        steps[classify_stack(frames)] += n
        for label, needles, excluded in HOT_SPOTS:
            if all(needle in stack for needle in needles) and not any(x in stack for x in excluded):
                hot[label] += n
    if not total:
        return ["  py-spy recorded no samples"]
    out = [f"  {total:,} samples of GIL-holding Python threads in both workers"]
    out.append("\n  by step of the cycle (innermost app frame; % of worker CPU samples)")
    for name, n in steps.most_common():
        out.append(f"    {100 * n / total:5.1f}%  {name}")
    out.append("\n  named mechanisms (cumulative: samples with the frame anywhere in the stack)")
    for label, _, _ in HOT_SPOTS:
        out.append(f"    {100 * hot[label] / total:5.1f}%  {label}")
    out.append("\n  by layer of the leaf frame")
    for name, n in layers.most_common():
        out.append(f"    {100 * n / total:5.1f}%  {name}")
    out.append(f"\n  top {top} frames by own time")
    for name, n in own.most_common(top):
        out.append(f"    {100 * n / total:5.1f}%  {name}")
    out.append(f"\n  top {top} frames by cumulative time (excluding the event loop's outer frames)")
    shown = 0
    for name, n in cumulative.most_common():
        if n / total > 0.97:
            continue
        out.append(f"    {100 * n / total:5.1f}%  {name}")
        shown += 1
        if shown >= top:
            break
    return out


def run_pyspy(server_pid: int, seconds: float, out: Path, started: list[int]) -> str | None:
    exe = VENV_BIN / "py-spy"
    if not exe.exists():
        return "py-spy is not installed in the venv (.venv/bin/pip install py-spy)"
    cmd = [
        str(exe),
        "record",
        "--pid",
        str(server_pid),
        "--subprocesses",
        "--gil",
        "--nonblocking",
        "--rate",
        "200",
        "--duration",
        str(max(1, round(seconds))),
        "--format",
        "raw",
        "--output",
        str(out),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started.append(proc.pid)
    _, err = proc.communicate()
    started.remove(proc.pid)
    if proc.returncode != 0 or not out.exists():
        return f"py-spy failed ({proc.returncode}): {err.strip()[-300:]}"
    return None
