"""The operator's listener: `/metrics` for Prometheus and `/healthz` for orchestrators, on the bot's loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable

from loguru import logger

from bot.metrics import CONTENT_TYPE, BotMetrics

# A scraper gets this long to send its request head and to take the answer: a slow one can't hold us.
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 10.0
MAX_HEAD = 8192
# More concurrent connections than any sane scrape setup opens; past it, new ones are closed at once.
MAX_CLIENTS = 16

HealthCheck = Callable[[], tuple[bool, str]]
Answer = tuple[int, str, bytes]

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}


def health_body(healthy: bool, reason: str) -> bytes:
    """The one-line JSON a probe reads."""
    return json.dumps({"status": "ok" if healthy else "unavailable", "reason": reason}).encode() + b"\n"


class MetricsServer:
    """A tiny HTTP/1.1 server: one request per connection, bounded in time, size and count."""

    def __init__(self, metrics: BotMetrics, health: HealthCheck, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        """Listen; raises OSError when the address is taken (the caller names the setting)."""
        self._server = await asyncio.start_server(self._serve, self.host, self.port, limit=MAX_HEAD)
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info("metrics and health on http://{}:{}/metrics and /healthz", self.host, self.port)

    async def close(self) -> None:
        """Stop listening and end connections still open; later connections are refused."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._clients):
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await asyncio.gather(*self._clients, return_exceptions=True)
                await server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is None or len(self._clients) >= MAX_CLIENTS:
            writer.transport.abort()
            return
        self._clients.add(task)
        try:
            await self._exchange(reader, writer)
        except (asyncio.CancelledError, ConnectionError, TimeoutError):
            writer.transport.abort()
        finally:
            self._clients.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(READ_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()
            return
        method, target = _request_line(head)
        status, content_type, body = self.answer(method, target)
        headers = (
            f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        )
        writer.write(headers.encode() + (b"" if method == "HEAD" else body))
        async with asyncio.timeout(WRITE_TIMEOUT):
            await writer.drain()

    def answer(self, method: str, target: str) -> Answer:
        """Route one request: status, content type and body."""
        path = target.partition("?")[0]
        if not method:
            return 400, "text/plain", b"bad request\n"
        if path not in ("/metrics", "/healthz"):
            return 404, "text/plain", b"not found: try /metrics or /healthz\n"
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"only GET and HEAD\n"
        if path == "/healthz":
            healthy, reason = self.health()
            return (200 if healthy else 503), "application/json", health_body(healthy, reason)
        return 200, CONTENT_TYPE, self.metrics.render()


def _request_line(head: bytes) -> tuple[str, str]:
    """(method, target) from a request head; empty strings when it isn't HTTP."""
    parts = head.split(b"\r\n", 1)[0].split(b" ")
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
        return "", ""
    return parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace")
