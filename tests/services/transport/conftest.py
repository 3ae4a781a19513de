"""A raw server on 127.0.0.1 sending exactly the bytes a transport test needs, and pool helpers."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from services.transport.pool import FastTransport

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawServer:
    """A TCP server running `handler` per connection; counts accepted connections."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.accepted = 0
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.requests: list[bytes] = []

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        self.writers.append(writer)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        """Stop listening and close every connection."""
        if self.server is not None:
            self.server.close()
        for writer in self.writers:
            writer.close()
        await asyncio.sleep(0.01)


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """Read one request head (and its Content-Length body)."""
    head = await reader.readuntil(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            await reader.readexactly(int(line.split(b":")[1]))
    return head


def answer(*responses: bytes, close_after: bool = False) -> Handler:
    """A handler sending the given raw responses, one per request, in order."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for raw in responses:
            await read_request(reader)
            writer.write(raw)
            await writer.drain()
        if close_after:
            return
        await reader.read()  # until the client hangs up

    return handle


def ok(body: bytes = b"hello", extra: bytes = b"") -> bytes:
    """A 200 response with a Content-Length body and `extra` raw header lines."""
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), extra, body)


RawServerFactory = Callable[..., Awaitable[tuple[str, RawServer]]]


@pytest.fixture
async def raw_server() -> AsyncIterator[RawServerFactory]:
    """Start RawServers on 127.0.0.1 (TLS when given a context); returns each base URL and server."""
    servers: list[RawServer] = []

    async def start(handler: Handler, *, tls: ssl.SSLContext | None = None) -> tuple[str, RawServer]:
        server = RawServer(handler)
        server.server = await asyncio.start_server(server._on_client, "127.0.0.1", 0, ssl=tls)
        servers.append(server)
        port = server.server.sockets[0].getsockname()[1]
        return f"{'https' if tls else 'http'}://127.0.0.1:{port}", server

    yield start
    for server in servers:
        await server.close()


def pool(c: httpx.AsyncClient) -> FastTransport:
    """The client's FastTransport."""
    transport = c._transport
    assert isinstance(transport, FastTransport)
    return transport


def states(c: httpx.AsyncClient) -> list[str]:
    """The states of the client's pooled connections, sorted."""
    return sorted(conn.state for conn in pool(c).pool_state().connections)


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll until `predicate` holds; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)
