"""The same requests through stock httpx and through Courier's service, against servers we didn't write.

hypercorn and uvicorn (its h11 and httptools backends) serve one ASGI app from a background thread on
127.0.0.1; what they can't send (trailers, a close-delimited body, 103 Early Hints) comes from the raw
server. Every field a caller sees must be the same both ways: status, reason, raw header items, body,
http_version, URL, history and the cookies stored.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import httpx
import hypercorn.asyncio
import hypercorn.config
import pytest
import uvicorn

from services.config import HTTPSettings
from services.http_client import http_client
from tests.services.transport.conftest import Handler, read_request

# Servers close a connection idle this long (seconds): the keep-alive case waits past it.
KEEP_ALIVE = 0.4
Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """One ASGI app for every server: each path answers one case."""
    if scope["type"] == "lifespan":
        while True:
            kind = (await receive())["type"]
            await send({"type": f"{kind}.complete"})
            if kind == "lifespan.shutdown":
                return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    path, query = scope["path"], parse_qs(scope["query_string"].decode())
    status, headers, content = 200, [(b"content-type", b"text/plain")], b""
    if path == "/plain":
        content = b"hello"
    elif path == "/chunked":  # no Content-Length and many small sends: chunked, one byte a chunk
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for i in range(64):
            await send({"type": "http.response.body", "body": b"%d" % (i % 10), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        headers = [(b"etag", b'"v1"')] if status == 304 else []
        content = b"" if status in (204, 304) else b"status body"
    elif path.startswith("/redirect/"):
        status = int(path.rsplit("/", 1)[1])
        headers = [(b"location", query.get("to", ["/echo"])[0].encode())]
    elif path == "/echo":
        fields = {"method": scope["method"], "body": body.decode(), "query": scope["query_string"].decode()}
        content = json.dumps(fields, sort_keys=True).encode()
        headers = [(b"content-type", b"application/json")]
    elif path == "/large-headers":
        headers += [(b"x-large-%d" % i, b"v" * 8000) for i in range(6)]  # 48 KB: under both caps
    elif path == "/cookies":
        headers += [(b"set-cookie", b"c%d=%d; Path=/" % (i, i)) for i in range(40)]
    elif path == "/non-ascii":
        headers += [(b"x-utf8", "café ☕".encode()), (b"x-latin1", b"caf\xe9")]
    elif path == "/gzip":
        content = gzip.compress(b"unpacked " * 100)
        headers += [(b"content-encoding", b"gzip")]
    elif path == "/big":
        content = bytes(range(256)) * 4096
    else:
        status, content = 404, b"no route"
    headers.append((b"content-length", b"%d" % len(content)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    return sock


class ServerThread:
    """hypercorn and both uvicorn backends serving `app` from one event loop in a thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.urls: dict[str, str] = {}
        self._stops: list[Callable[[], Awaitable[None]]] = []

    def start(self) -> dict[str, str]:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start_all(), self.loop).result(timeout=20)
        return self.urls

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._stop_all(), self.loop).result(timeout=20)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()

    async def _start_all(self) -> None:
        await self._start_hypercorn()
        for backend in ("h11", "httptools"):
            await self._start_uvicorn(backend)

    async def _stop_all(self) -> None:
        for stop in self._stops:
            await stop()

    async def _start_hypercorn(self) -> None:
        sock = _listening_socket()
        port = sock.getsockname()[1]
        config = hypercorn.config.Config()
        config.bind = [f"fd://{sock.detach()}"]
        config.keep_alive_timeout = KEEP_ALIVE
        config.accesslog = None
        config.errorlog = None
        stopping = asyncio.Event()
        task = asyncio.create_task(hypercorn.asyncio.serve(app, config, shutdown_trigger=stopping.wait))  # type: ignore[arg-type]

        async def stop() -> None:
            stopping.set()
            await asyncio.wait_for(task, 10)

        self._stops.append(stop)
        self.urls["hypercorn"] = await self._ready(port)

    async def _start_uvicorn(self, backend: str) -> None:
        sock = _listening_socket()
        port = sock.getsockname()[1]
        config = uvicorn.Config(
            app,
            http=backend,
            lifespan="off",
            log_level="error",
            access_log=False,
            timeout_keep_alive=KEEP_ALIVE,  # type: ignore[arg-type]
        )
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve(sockets=[sock]))

        async def stop() -> None:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            sock.close()

        self._stops.append(stop)
        self.urls[f"uvicorn-{backend}"] = await self._ready(port)

    @staticmethod
    async def _ready(port: int) -> str:
        """Wait until the server answers HTTP on `port`; returns its base URL."""
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.write(b"GET /plain HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answered = await reader.read()
            writer.close()
            if answered.startswith(b"HTTP/1.1 200"):
                return url
            await asyncio.sleep(0.02)
        raise RuntimeError(f"no server on {url}")


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, str]]:
    """Base URL of each independently written server, started once for this module."""
    thread = ServerThread()
    try:
        yield thread.start()
    finally:
        thread.stop()


SERVERS = ["hypercorn", "uvicorn-h11", "uvicorn-httptools"]


@pytest.fixture
async def stock() -> AsyncIterator[httpx.AsyncClient]:
    """Stock httpx (httpcore) with the service's own client options."""
    async with httpx.AsyncClient(**http_client.client_options()) as client:
        yield client


@pytest.fixture(autouse=True)
def service() -> None:
    """Courier's service with nothing between a call and the transport: no retries, no cache."""
    http_client.configure(HTTPSettings(retries=0, cache=False, deadline=10))


def observed(response: httpx.Response) -> dict[str, Any]:
    """What a caller can see of a response, with the Date header's changing value masked."""
    return {
        "status": response.status_code,
        "reason": response.reason_phrase,
        "headers": [(k, b"<date>" if k.lower() == b"date" else v) for k, v in response.headers.raw],
        "body": response.content,
        "http_version": response.http_version,
        "url": str(response.url),
        "history": [observed(hop) for hop in response.history],
    }


async def both(stock: httpx.AsyncClient, method: str, url: str, **options: Any) -> tuple[dict, dict]:
    """The same request through stock httpx and through the service, observed the same way."""
    expected = await stock.request(method, url, **options)
    got = await http_client.request(method, url, raise_for_status=False, **options)
    return observed(expected), observed(got)


CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/plain", {}),
    ("GET", "/chunked", {}),
    ("HEAD", "/plain", {}),
    ("HEAD", "/chunked", {}),
    ("GET", "/status/204", {}),
    ("GET", "/status/304", {}),
    ("GET", "/status/404", {}),
    ("GET", "/status/503", {}),
    ("POST", "/echo", {"content": b"x" * 1000, "headers": {"Expect": "100-continue"}}),
    ("GET", "/large-headers", {}),
    ("GET", "/cookies", {}),
    ("GET", "/non-ascii", {}),
    ("GET", "/gzip", {}),
    ("GET", "/big", {}),
    ("GET", "/echo?q=a%20b&r=1", {}),
    *[("POST", f"/redirect/{code}?to=/echo", {"content": b"order=1"}) for code in (301, 302, 303, 307, 308)],
    *[("PUT", f"/redirect/{code}?to=/echo%3Fhop%3D1", {"json": {"a": 1}}) for code in (302, 307)],
    ("GET", "/redirect/302?to=/redirect/301%3Fto%3D/plain", {}),
]


@pytest.mark.parametrize("server", SERVERS)
@pytest.mark.parametrize(("method", "path", "options"), CASES, ids=[f"{m} {p}" for m, p, _ in CASES])
async def test_differential_same_response_as_stock_httpx(servers, stock, server, method, path, options):
    expected, got = await both(stock, method, servers[server] + path, **options)
    assert got == expected


@pytest.mark.parametrize("server", SERVERS)
async def test_differential_cookies_stored_like_stock(servers, stock, server):
    await both(stock, "GET", servers[server] + "/cookies")
    courier = await http_client.get_client()
    assert sorted(courier.cookies.items()) == sorted(stock.cookies.items())
    assert len(courier.cookies) == 40


@pytest.mark.parametrize("server", SERVERS)
async def test_differential_keep_alive_after_server_closed_idle_connection(servers, stock, server):
    url = servers[server] + "/plain"
    first = await both(stock, "GET", url)
    await asyncio.sleep(KEEP_ALIVE + 0.4)  # the server closes both idle connections meanwhile
    second = await both(stock, "GET", url)
    assert first[1] == first[0]
    assert second[1] == second[0]
    assert http_client.get_pool_stats().connections == 1


@pytest.mark.parametrize("server", SERVERS)
async def test_differential_concurrent_requests_on_one_pool(servers, stock, server):
    urls = [servers[server] + path for path in ("/plain", "/chunked", "/big", "/gzip", "/cookies")] * 4
    expected = await asyncio.gather(*(stock.get(u) for u in urls))
    got = await asyncio.gather(*(http_client.get(u, raise_for_status=False) for u in urls))
    assert [observed(r) for r in got] == [observed(r) for r in expected]


# --- what the ASGI servers can't send, from the raw server, through both clients ---

RAW = {
    "/trailers": (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"".join(b"1\r\n%d\r\n" % (i % 10) for i in range(20))
        + b"0\r\nX-Checksum: abc\r\nSet-Cookie: t=1\r\n\r\n"
    ),
    "/close-delimited": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the server hangs up",
    "/early-hints": (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal"
    ),
    "/ows": b"HTTP/1.1 200 OK\r\nX-Pad:  \t v \t \r\nX-Fold: a\r\n  b\r\nContent-Length: 2\r\n\r\nok",
}


def raw_routes() -> Handler:
    """Answer each path with its RAW bytes, then close (so a close-delimited body ends)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_request(reader)
        path = head.split(b" ", 2)[1].decode()
        writer.write(RAW[path])
        await writer.drain()

    return handle


@pytest.mark.parametrize("path", sorted(RAW))
async def test_differential_raw_framings_same_as_stock(raw_server, stock, path):
    url, _ = await raw_server(raw_routes())
    expected, got = await both(stock, "GET", url + path)
    assert got == expected
    courier = await http_client.get_client()
    assert sorted(courier.cookies.items()) == sorted(stock.cookies.items())
