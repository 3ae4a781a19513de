"""The /metrics and /healthz listener: answers, refusals, and scrapers that can't hold the bot."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator

import pytest

from bot import metrics_server
from bot.metrics import BotMetrics
from bot.metrics_server import MetricsServer
from services.http_client import http_client
from tests.bot.test_metrics import FakeBot

HEALTH: list[tuple[bool, str]] = [(True, "connected")]


@pytest.fixture
async def server() -> AsyncIterator[MetricsServer]:
    """A listener on a free 127.0.0.1 port."""
    HEALTH[:] = [(True, "connected to Discord in 1 guild(s)")]
    s = MetricsServer(BotMetrics(FakeBot(latency=math.nan), http_client), lambda: HEALTH[0], "127.0.0.1", 0)
    await s.start()
    yield s
    await s.close()


async def fetch(port: int, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send `raw` and read the whole answer (the server closes after one)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    async with asyncio.timeout(5):
        data = await reader.read()
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


async def drained(reader: asyncio.StreamReader) -> int:
    """Bytes read until the server closed or reset the connection."""
    total = 0
    with contextlib.suppress(ConnectionError):
        while chunk := await reader.read(65536):
            total += len(chunk)
    return total


def get(path: str, method: str = "GET") -> bytes:
    return f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()


async def test_metrics_server_serves_prometheus_text(server: MetricsServer) -> None:
    status, headers, body = await fetch(server.port, get("/metrics"))
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert b"# TYPE http_client_request_duration_seconds histogram" in body
    assert int(headers["Content-Length"]) == len(body)


async def test_metrics_server_healthz_200_then_503_with_reason(server: MetricsServer) -> None:
    status, headers, body = await fetch(server.port, get("/healthz"))
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"status": "ok", "reason": "connected to Discord in 1 guild(s)"}
    assert body.count(b"\n") == 1
    HEALTH[0] = (False, "shutting down")
    status, _, body = await fetch(server.port, get("/healthz"))
    assert status == 503
    assert json.loads(body) == {"status": "unavailable", "reason": "shutting down"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (get("/"), 404),
        (get("/metrics", "POST"), 405),
        (b"hello\r\n\r\n", 400),
    ],
)
async def test_metrics_server_refuses_what_it_does_not_serve(
    server: MetricsServer, raw: bytes, expected: int
) -> None:
    status, _, _ = await fetch(server.port, raw)
    assert status == expected


async def test_metrics_server_head_sends_no_body(server: MetricsServer) -> None:
    status, headers, body = await fetch(server.port, get("/metrics", "HEAD"))
    assert status == 200 and int(headers["Content-Length"]) > 0 and body == b""


async def test_metrics_server_a_silent_client_is_cut_and_others_still_served(
    server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_server, "READ_TIMEOUT", 0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")  # never finishes its head
    status, _, _ = await fetch(server.port, get("/healthz"))
    assert status == 200
    async with asyncio.timeout(5):
        with contextlib.suppress(ConnectionResetError):
            assert await reader.read() == b""  # closed by the server, not by us
    writer.close()


async def test_metrics_server_an_oversized_head_is_dropped(server: MetricsServer) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n")
    async with asyncio.timeout(5):
        assert await drained(reader) < 1000
    writer.close()


async def test_metrics_server_past_max_clients_new_connections_are_closed(
    server: MetricsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics_server, "MAX_CLIENTS", 1)
    _, holder = await asyncio.open_connection("127.0.0.1", server.port)
    holder.write(b"GET /metrics")
    await holder.drain()
    for _ in range(100):  # let the server register the first connection
        if server._clients:
            break
        await asyncio.sleep(0.01)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(get("/healthz"))
    async with asyncio.timeout(5):
        assert await drained(reader) == 0
    writer.close()
    holder.close()


async def test_metrics_server_after_close_connections_are_refused(server: MetricsServer) -> None:
    port = server.port
    _, idle = await asyncio.open_connection("127.0.0.1", port)
    await server.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", port)
    idle.close()


async def test_metrics_server_taken_port_raises_oserror(server: MetricsServer) -> None:
    other = MetricsServer(server.metrics, server.health, "127.0.0.1", server.port)
    with pytest.raises(OSError, match="address already in use"):
        await other.start()
