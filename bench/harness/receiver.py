"""A webhook receiver for the benchmarks, in its own process: aiohttp answering 204 to every
POST and counting them (``GET /count``). Run as ``python -m bench.harness.receiver PORT``."""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

import httpx
from aiohttp import web


def main() -> None:
    port = int(sys.argv[1])
    received = 0

    async def hook(request: web.Request) -> web.Response:
        nonlocal received
        await request.read()
        received += 1
        return web.Response(status=204)

    async def count(request: web.Request) -> web.Response:
        return web.json_response({"received": received})

    app = web.Application()
    app.router.add_post("/hooks", hook)
    app.router.add_get("/count", count)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


@dataclass
class ReceiverProcess:
    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def received(self) -> int:
        return int(httpx.get(f"http://127.0.0.1:{self.port}/count").json()["received"])

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def start_receiver(port: int, niceness: int = 0) -> ReceiverProcess:
    """The receiver on ``port``; ``niceness`` > 0 runs it at a lower CPU priority, as a stand-in
    for a receiver on another machine (it shares this machine's CPUs with the service)."""
    proc = subprocess.Popen(
        ["nice", "-n", str(niceness), sys.executable, "-m", "bench.harness.receiver", str(port)]
    )
    receiver = ReceiverProcess(proc, port)
    deadline = time.monotonic() + 15
    while True:
        try:
            receiver.received()
            return receiver
        except httpx.HTTPError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.1)


if __name__ == "__main__":
    main()
