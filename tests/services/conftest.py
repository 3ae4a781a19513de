"""A fault-injecting HTTP/1.1 server on 127.0.0.1 for the resilience tests, and fast settings."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace

import pytest

from services.config import HTTPSettings
from services.http_client import http_client

# Small waits so the whole resilience suite stays fast; tests override what they exercise.
FAST = HTTPSettings(
    retries=2,
    retry_backoff=0.01,
    retry_backoff_max=0.05,
    max_wait=2.0,
    deadline=5.0,
    connect_timeout=1.0,
    read_timeout=1.0,
    breaker_threshold=0,
    host_limits=(),
    drain_timeout=2.0,
)


@dataclass
class Seen:
    """A request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes = b""


Behaviour = Callable[[Seen, asyncio.StreamWriter], Awaitable[None]]


def reply(
    status: int = 200, body: bytes = b"", headers: dict[str, str] | None = None, delay: float = 0
) -> Behaviour:
    """Answer with a complete response (after `delay` seconds)."""

    async def behave(seen: Seen, writer: asyncio.StreamWriter) -> None:
        if delay:
            await asyncio.sleep(delay)
        head = {"Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
        writer.write(_head(status, head) + body)
        await writer.drain()

    return behave


def reset_mid_body() -> Behaviour:
    """Promise 1000 bytes, send 10, then reset the connection (RST, not FIN)."""

    async def behave(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(200, {"Content-Length": "1000"}) + b"x" * 10)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    return behave


def trickle(interval: float, size: int = 100) -> Behaviour:
    """Send a `size`-byte body one byte every `interval` seconds."""

    async def behave(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(200, {"Content-Length": str(size)}))
        for _ in range(size):
            writer.write(b"x")
            await writer.drain()
            await asyncio.sleep(interval)

    return behave


def endless(
    chunk: int = 64 * 1024, limit: int = 100_000, status: int = 200, headers: dict[str, str] | None = None
) -> Behaviour:
    """Stream a chunked body with no end (bounded by `limit` chunks), until the client hangs up."""

    async def behave(seen: Seen, writer: asyncio.StreamWriter) -> None:
        writer.write(_head(status, {"Transfer-Encoding": "chunked", **(headers or {})}))
        payload = f"{chunk:x}\r\n".encode() + b"y" * chunk + b"\r\n"
        for _ in range(limit):
            writer.write(payload)
            await writer.drain()

    return behave


def hang() -> Behaviour:
    """Never answer."""

    async def behave(seen: Seen, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3600)

    return behave


def _head(status: int, headers: dict[str, str]) -> bytes:
    lines = [f"HTTP/1.1 {status} X"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@dataclass
class FaultServer:
    """Answers each path with its scripted behaviours in order (the last one repeats); counts hits."""

    routes: dict[str, list[Behaviour]] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    seen: list[Seen] = field(default_factory=list)
    base: str = ""
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def route(self, path: str, *behaviours: Behaviour) -> str:
        """Script `path`; returns its absolute URL."""
        self.routes[path] = list(behaviours)
        return self.base + path

    async def start(self) -> str:
        """Listen on an ephemeral port of 127.0.0.1."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.base = f"http://127.0.0.1:{port}"
        return self.base

    async def close(self) -> None:
        """Stop listening and end every connection still being served."""
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            request_line, *header_lines = head.decode("latin-1").split("\r\n")
            method, target, _ = request_line.split(" ", 2)
            headers = {}
            for line in filter(None, header_lines):
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            path = target.split("?", 1)[0]
            seen = Seen(method, path, headers, body)
            self.seen.append(seen)
            self.hits[path] += 1
            script = self.routes.get(path) or [reply(404)]
            behaviour = script[min(self.hits[path], len(script)) - 1]
            await behaviour(seen, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            # close() cancels us; ending normally spares asyncio 3.11's "Exception in callback" log.
            pass
        finally:
            writer.close()
            self._tasks.discard(task)  # type: ignore[arg-type]


@pytest.fixture
async def fault_server() -> AsyncIterator[FaultServer]:
    """A started FaultServer, closed after the test."""
    server = FaultServer()
    await server.start()
    yield server
    await server.close()


@pytest.fixture
def fast(fresh_http_client: None) -> Callable[..., HTTPSettings]:
    """Configure the shared client with FAST settings (plus overrides) and return them."""

    def configure(**overrides: object) -> HTTPSettings:
        settings = replace(FAST, **overrides)  # type: ignore[arg-type]
        http_client.configure(settings)
        return settings

    configure()
    return configure
