"""Running the service and the command as real processes, for tests that need them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.config import Settings

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
