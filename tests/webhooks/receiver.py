"""A real HTTP receiver for the webhook tests: a threaded server on 127.0.0.1 that records every
request (headers and body) and answers from a script (status, Retry-After, a delay)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float


class Receiver:
    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: list[Reply] = []  # the next answers, in order; then ``default``
        self.default = Reply()
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight_per_id: dict[str, int] = {}
        self._per_id: dict[str, int] = {}
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                wid = headers.get("webhook-id", "")
                with receiver.lock:
                    receiver.received.append(Received(headers, body, time.monotonic()))
                    reply = receiver.script.pop(0) if receiver.script else receiver.default
                    receiver._per_id[wid] = receiver._per_id.get(wid, 0) + 1
                    receiver.most_in_flight_per_id[wid] = max(
                        receiver.most_in_flight_per_id.get(wid, 0), receiver._per_id[wid]
                    )
                try:
                    if reply.delay:
                        time.sleep(reply.delay)
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
                except OSError:
                    pass  # the sender gave up waiting
                finally:
                    with receiver.lock:
                        receiver._per_id[wid] -= 1

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"

    def bodies(self) -> list[bytes]:
        with self.lock:
            return [r.body for r in self.received]

    @contextmanager
    def running(self) -> Iterator[Receiver]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()
