"""A small TCP fault proxy for tests: put it between a client and a local database, then cut,
blackhole or slow the link at will.

    with FaultProxy(5432) as proxy:          # listens on 127.0.0.1:<free port>
        url = f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/db"
        proxy.cut()                          # RST every connection, RST new ones at once
        proxy.cut(mode="blackhole")          # connections stay open, bytes (and FINs) vanish
        proxy.slow(3)                        # every chunk waits 3 s, in both directions
        proxy.heal()                         # forward normally again

It runs an asyncio loop in a daemon thread; every control call is applied on that loop before it
returns, so a test's next statement already meets the new behaviour. It only ever connects to
127.0.0.1: it is a test tool, not a general relay.

Blackholed bytes are discarded, never delivered later, so a connection that lost bytes is no longer
a valid protocol stream: ``heal()`` resets those connections (the client sees the link drop, as
after a long partition) and leaves the untouched ones forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

TARGET_HOST = "127.0.0.1"
CHUNK = 65536
T = TypeVar("T")

Mode = Literal["forward", "reset", "blackhole"]


def _reset(writer: asyncio.StreamWriter | None) -> None:
    """Close with an RST (SO_LINGER 0), as a crashed host or a firewall reject would."""
    if writer is None:
        return
    transport = writer.transport
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Link:
    """One client connection and, unless blackholed from the start, its upstream connection."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.tainted = False  # lost bytes to a blackhole: no longer a valid stream

    def reset(self) -> None:
        for task in self.tasks:
            task.cancel()
        _reset(self.client)
        _reset(self.upstream)


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = TARGET_HOST) -> None:
        if target_host != TARGET_HOST:
            raise ValueError(f"FaultProxy only forwards to {TARGET_HOST}, not {target_host!r}")
        if not 0 < target_port < 65536:
            raise ValueError(f"bad target port {target_port}")
        self.target_host = target_host
        self.target_port = target_port
        self.mode: Mode = "forward"
        self.delay = 0.0
        self.port = 0
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name=f"fault-proxy-{target_port}", daemon=True
        )
        self._thread.start()
        try:
            self._call(self._start())
        except BaseException:
            self._stop_loop()
            raise

    # -- controls (any thread) -------------------------------------------------------------------

    def cut(self, mode: Literal["reset", "blackhole"] = "reset") -> None:
        """Take the link down.

        ``reset``: every open connection is reset, and new ones are accepted then reset at once
        (the client fails fast, as against a host that rejects it).
        ``blackhole``: open connections stay up but every byte in either direction is dropped,
        and new connections are accepted but never reach the target (the client's connect and
        reads hang until its own timeout, as against a silent network partition).
        """
        if mode not in ("reset", "blackhole"):
            raise ValueError(f"unknown cut mode {mode!r}")
        self._call(self._set(mode, self.delay))

    def slow(self, delay_seconds: float) -> None:
        """Forward, but hold every chunk ``delay_seconds`` before passing it on, both ways."""
        if delay_seconds < 0:
            raise ValueError("delay must be >= 0")
        self._call(self._set("forward", float(delay_seconds)))

    def heal(self) -> None:
        """Forward normally again; connections that lost bytes to a blackhole are reset."""
        self._call(self._set("forward", 0.0))

    def reset_connections(self) -> None:
        """Reset every open connection without changing the mode."""
        self._call(self._reset_all(lambda _link: True))

    @property
    def connections(self) -> int:
        return self._call(self._count())

    def close(self) -> None:
        """Stop listening, reset every connection and stop the loop. Idempotent."""
        if self._loop.is_closed():
            return
        if self._loop.is_running():
            with contextlib.suppress(Exception):
                self._call(self._shutdown())
        self._stop_loop()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- loop side -------------------------------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        if not self._thread.is_alive():
            self._loop.close()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(self._accept, TARGET_HOST, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _count(self) -> int:
        return len(self._links)

    async def _set(self, mode: Mode, delay: float) -> None:
        self.mode, self.delay = mode, delay
        if mode == "reset":
            await self._reset_all(lambda _link: True)
        elif mode == "forward":
            await self._reset_all(lambda link: link.tainted)

    async def _reset_all(self, which: Any) -> None:
        for link in [link for link in self._links if which(link)]:
            link.reset()
            self._links.discard(link)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._reset_all(lambda _link: True)
        # Let every connection handler finish, so none is destroyed pending with the loop.
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link(writer)
        self._links.add(link)
        try:
            if self.mode == "reset":
                return
            if self.mode == "blackhole":
                link.tainted = True
                await self._swallow(reader)
                return
            try:
                up_reader, link.upstream = await asyncio.open_connection(
                    self.target_host, self.target_port
                )
            except OSError:
                return
            if link not in self._links:  # cut while connecting
                return
            link.tasks = {
                asyncio.create_task(self._pump(reader, link.upstream, link)),
                asyncio.create_task(self._pump(up_reader, writer, link)),
            }
            await asyncio.wait(link.tasks, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            if link in self._links:
                self._links.discard(link)
                link.reset()

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(CHUNK):
            pass
        await self._hold_while_blackholed()

    async def _hold_while_blackholed(self) -> None:
        """A blackhole swallows a closing connection too: its FIN never reaches the other side,
        which keeps its end open (as behind a vanished host) until the link heals or is cut."""
        while self.mode == "blackhole":
            await asyncio.sleep(0.05)

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link
    ) -> None:
        try:
            while data := await reader.read(CHUNK):
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.mode == "blackhole":
                    link.tainted = True
                    continue
                if self.mode == "reset":
                    return
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            return
        if self.mode == "blackhole":
            link.tainted = True
            await self._hold_while_blackholed()
