"""Running the service and the command as real processes, for tests that need them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from app.config import Settings
from tests.conftest import SUPPRESSION_KEY

SETTING_VARIABLES = {name.upper() for name in Settings.model_fields}


def command() -> list[str]:
    script = Path(sys.executable).with_name("callqueue")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from app.cli import main; main()"]


def clean_env(**variables: str) -> dict[str, str]:
    """The caller's environment without any callqueue setting, plus ``variables``; calling
    hours ``always`` unless given (tests run at any hour)."""
    env = {k: v for k, v in os.environ.items() if k.upper() not in SETTING_VARIABLES}
    env["CALLING_HOURS"] = "always"
    env.update(variables)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(base: str, proc: subprocess.Popen[str], timeout: float = 120) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"serve exited with {proc.returncode}")
        try:
            response = httpx.get(f"{base}/readyz", timeout=2)
            if response.status_code == 200:
                return response
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise AssertionError("serve did not become ready")


def stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError("serve did not stop on SIGTERM") from None
    return proc.returncode, err


def service_env(store_url: str, replica_url: str, cron_secret: str, **extra: str) -> dict[str, str]:
    """The environment of a test service process: the test databases and the suite's
    do-not-call key (another key would be refused: SPEC 8.1), nothing else inherited."""
    return clean_env(
        DATABASE_URL=store_url,
        REPLICA_DATABASE_URL=replica_url,
        CRON_SECRET=cron_secret,
        SUPPRESSION_KEY=SUPPRESSION_KEY,
        APP_ENV="test",
        COOLING_PERIOD_MINUTES="0",
        SCHEDULER_ENABLED="false",
        **extra,
    )


@contextmanager
def running_service(
    env: dict[str, str], log: Path, *, workers: int = 1
) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``uvicorn app.main:app`` as a real process on a free port, ready; stopped on the way out.
    Its log goes to a file, not a pipe: a full pipe nobody reads would stall its logging."""
    port = free_port()
    args = [sys.executable, "-m", "uvicorn", "app.main:app", "--port", str(port)]
    if workers > 1:
        args += ["--workers", str(workers)]
    with log.open("w") as sink:
        proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=sink, text=True)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=60)
        yield proc, base
    finally:
        if proc.poll() is None:
            stop(proc)
