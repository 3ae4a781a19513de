"""Client CPU per request with no I/O at all: every client's sockets replaced by one in-memory fake.

Run: `uv run python benchmarks/no_io.py` (about half a minute).
The kernel's share of a loopback benchmark (send, recv, epoll) is the same for every client and
noisy; without it, what is left is each client's own Python and C work, steady to within a
microsecond. Every client gets the same canned response from a fake asyncio transport, one loop
iteration after the request head is written. Variants run interleaved in one process, medians of
several rounds, so this shows where time goes; http_bench.py remains the measure against nginx.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import sys
import time
import types
from collections.abc import Awaitable, Callable
from typing import Any

from loguru import logger

from services.config import HTTPSettings
from services.http_client import HTTPClient
from services.transport.httpx_glue import build_request_fast
from services.transport.pool import FastTransport

BODY = b'{"id":1,"name":"courier","ok":true,"tags":["a","b","c"]}'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 20:00:00 GMT\r\n"
    b"Content-Type: application/json\r\nContent-Length: %d\r\nConnection: keep-alive\r\n"
    b"Cache-Control: no-store\r\n\r\n%b" % (len(BODY), BODY)
)
LARGE = bytes(range(256)) * 400  # 100 KiB
LARGE_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 20:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: keep-alive\r\n"
    b"Cache-Control: no-store\r\n\r\n%b" % (len(LARGE), LARGE)
)
# /etag.bin: the same body, stored but stale at once (no-cache), so every GET after the first
# revalidates with If-None-Match and gets a 304 (RFC 9111 §4.3).
VALIDATED = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 20:00:00 GMT\r\n"
    b"Content-Type: application/octet-stream\r\nContent-Length: %d\r\nConnection: keep-alive\r\n"
    b'ETag: "6748a2c0-19000"\r\nCache-Control: no-cache\r\n\r\n%b' % (len(LARGE), LARGE)
)
NOT_MODIFIED = (
    b"HTTP/1.1 304 Not Modified\r\nServer: nginx/1.22.1\r\nDate: Tue, 01 Dec 2026 20:00:00 GMT\r\n"
    b'Connection: keep-alive\r\nETag: "6748a2c0-19000"\r\nCache-Control: no-cache\r\n\r\n'
)
PATHS = {"small": "/small.json", "large": "/large.bin", "revalidate": "/etag.bin"}
One = Callable[[], Awaitable[int]]
# aiohttp's pool: 100 connections, all kept alive, one host may use them all (Courier's bulkhead gives half).
POOL = {"HTTP_MAX_KEEPALIVE_CONNECTIONS": "100", "HTTP_MAX_CONNECTIONS_PER_HOST": "100"}


def at_path(url: str, body: str) -> str:
    """`url` with its path swapped for `body`'s (unchanged when `body` is empty)."""
    return url.rsplit("/", 1)[0] + PATHS[body] if body else url


def answer_for(head: bytes) -> bytes:
    """The canned response for one request head."""
    if b" /large.bin " in head:
        return LARGE_RESPONSE
    if b" /etag.bin " in head:
        return NOT_MODIFIED if b"\r\nif-none-match:" in head.lower() else VALIDATED
    return RESPONSE


class FakeSocketTransport(asyncio.Transport):
    """Answers each complete request head with RESPONSE on the next loop iteration."""

    def __init__(self, loop: asyncio.AbstractEventLoop, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self._loop, self._protocol, self._pending, self._closing = loop, protocol, b"", False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self._pending += bytes(data)
        while b"\r\n\r\n" in self._pending:  # GETs only: no body follows a head
            head, _, self._pending = self._pending.partition(b"\r\n\r\n")
            self._loop.call_soon(self._answer, answer_for(head))

    def _answer(self, response: bytes) -> None:
        if self._closing:
            return
        if isinstance(self._protocol, asyncio.BufferedProtocol):
            buffer = self._protocol.get_buffer(len(response))
            buffer[: len(response)] = response
            self._protocol.buffer_updated(len(response))
        else:
            assert isinstance(self._protocol, asyncio.Protocol)
            self._protocol.data_received(response)

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self._loop.call_soon(self._protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 80), "sockname": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def is_reading(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return 0


async def fake_create_connection(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], asyncio.BaseProtocol], *args: Any, **kwargs: Any
) -> tuple[asyncio.Transport, asyncio.BaseProtocol]:
    if kwargs.get("sock") is not None:  # aiohttp connects a socket first, then hands it over
        kwargs["sock"].close()
    protocol = factory()
    transport = FakeSocketTransport(loop, protocol)
    protocol.connection_made(transport)
    return transport, protocol


async def build(variant: str, url: str) -> tuple[One, Callable[[], Awaitable[None]]]:
    if variant in ("courier", "courier-no-cache"):
        env = {**POOL, "HTTP_CACHE": str(variant == "courier").lower()}
        service = HTTPClient(HTTPSettings.from_env(env))

        async def get() -> int:
            return len((await service.get(url)).content)

        return get, service.close
    if variant == "transport":  # FastTransport.fetch with a request built as the service builds it
        service = HTTPClient(HTTPSettings.from_env(POOL))
        client = await service.get_client()
        transport = client._transport
        assert isinstance(transport, FastTransport)

        async def fetch() -> int:
            request = build_request_fast(client, "GET", url, {})
            assert request is not None
            return len((await transport.fetch(request)).content)

        return fetch, service.close
    if variant == "aiohttp":
        import aiohttp  # noqa: PLC0415 - only this variant needs it

        session = aiohttp.ClientSession()

        async def aio() -> int:
            async with session.get(url) as response:
                return len(await response.read())

        return aio, session.close
    raise SystemExit(f"unknown variant {variant}")


async def run(one: One, requests: int, concurrency: int) -> None:
    async def worker() -> None:
        for _ in range(requests // concurrency):
            await one()

    await asyncio.gather(*(worker() for _ in range(concurrency)))


async def main(variants: list[str], concurrency: int, requests: int, rounds: int, path: str) -> None:
    loop = asyncio.get_running_loop()
    loop.create_connection = types.MethodType(fake_create_connection, loop)  # type: ignore[method-assign]
    with socket.socket() as listener:  # aiohttp connects before it creates the connection
        listener.bind(("127.0.0.1", 0))
        listener.listen(1024)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}{PATHS[path]}"
        # `courier@revalidate` and the like: that variant on another path, interleaved with the rest.
        built = {v: await build(v.partition("@")[0], at_path(url, v.partition("@")[2])) for v in variants}
        for one, _ in built.values():
            await run(one, 2_000, concurrency)  # warm up
        us: dict[str, list[float]] = {v: [] for v in variants}
        for _ in range(rounds):
            for v, (one, _) in built.items():
                cpu = time.process_time()
                await run(one, requests, concurrency)
                us[v].append((time.process_time() - cpu) / requests * 1e6)
        for _, close in built.values():
            await close()
    bases = [v for v in variants if v.partition("@")[0] == "aiohttp"]
    base = statistics.median(us[bases[0]]) if bases else None
    print(
        f"\n{path}, c={concurrency}, {requests} requests x {rounds} rounds, client CPU per request (median)\n"
    )
    print("| client | us/request | vs aiohttp |")
    print("|---|---:|---:|")
    for v in variants:
        median = statistics.median(us[v])
        print(f"| {v} | {median:.1f} | {f'{median / base:.2f}x' if base else ''} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--variants", default="courier,courier-no-cache,transport,aiohttp")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--body",
        choices=sorted(PATHS),
        default="small",
        help="small JSON, 100 KiB (no-store), or 100 KiB revalidated by a 304 every time",
    )
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="INFO")  # what a bot runs with: the DEBUG line per request is filtered
    asyncio.run(main(args.variants.split(","), args.concurrency, args.requests, args.rounds, args.body))
