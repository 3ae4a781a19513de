"""Live pool figures, read from a real pool talking to servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time

import pytest
import trustme
from aiohttp import web
from hypercorn.asyncio import serve
from hypercorn.config import Config

from services.config import HTTPSettings
from services.http_client import http_client


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll `predicate` until true; the bound keeps a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


async def test_pool_stats_before_first_use_report_nothing_open():
    stats = http_client.get_pool_stats()
    assert stats.available
    assert not stats.client_open
    assert stats.connections == 0
    assert stats.max_connections == 100
    assert stats.as_dict()["latency"]["samples"] == 0


@pytest.mark.parametrize("transport", ["auto", "httpcore"])
async def test_pool_stats_show_active_and_queued_work_then_idle(local_server, transport):
    # One origin may use the whole (tiny) pool here; by default it would get half.
    http_client.configure(
        HTTPSettings(
            max_connections=2, max_keepalive_connections=2, max_connections_per_host=2, transport=transport
        )
    )
    release = asyncio.Event()
    inside = 0

    async def held(request: web.Request) -> web.Response:
        nonlocal inside
        inside += 1
        await release.wait()
        return web.Response(text="done")

    async def quick(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    base = await local_server({"/held": held})
    other = await local_server({"/quick": quick})
    burst = [asyncio.create_task(http_client.get(f"{base}/held")) for _ in range(5)]
    await wait_until(lambda: inside == 2)
    await wait_until(lambda: http_client.get_pool_stats().queued == 3)

    during = http_client.get_pool_stats()
    assert during.connections == 2
    assert during.active == 2
    assert during.idle == 0
    assert during.queued == 3
    assert during.in_flight == 5
    assert during.http1 == 2
    (row,) = during.origins
    assert row.origin == base
    assert (row.active, row.queued) == (2, 3)
    if transport == "auto":  # only Courier's pool has per-origin slots
        assert (row.in_flight, row.limit, row.shed) == (2, 2, 0)
    else:
        assert row.limit is None

    release.set()
    await asyncio.gather(*burst)
    await http_client.get(f"{other}/quick")
    after = http_client.get_pool_stats()
    assert after.in_flight == 0
    assert after.active == 0
    assert after.queued == 0
    assert after.requests_total == 6
    by_origin = {row.origin: row for row in after.origins}
    assert set(by_origin) == {base, other}
    # Two connections are kept, whichever origins they belong to, as max_keepalive allows.
    assert sum(row.idle for row in after.origins) == after.idle <= 2
    assert after.by_status_class == {"2xx": 6}


async def test_pool_stats_snapshot_reads_unavailable_instead_of_crashing(local_server, monkeypatch):
    http_client.configure(HTTPSettings(transport="httpcore"))

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    base = await local_server({"/": ok})
    await http_client.get(f"{base}/")
    client = await http_client.get_client()
    monkeypatch.setattr(client._transport._pool, "_connections", None)
    stats = http_client.get_pool_stats()
    assert not stats.available
    assert stats.connections == 0
    assert stats.requests_total == 1


async def test_pool_stats_snapshot_reads_unavailable_when_fast_transport_fails(local_server, monkeypatch):
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    base = await local_server({"/": ok})
    await http_client.get(f"{base}/")
    client = await http_client.get_client()
    assert http_client.get_pool_stats().idle == 1

    def broken() -> None:
        raise AttributeError("moved")

    monkeypatch.setattr(client._transport, "pool_state", broken)
    stats = http_client.get_pool_stats()
    assert not stats.available
    assert stats.connections == 0
    assert stats.requests_total == 1


@pytest.fixture
async def h2_server(tmp_path, unused_tcp_port):
    """A hypercorn server speaking HTTP/2 over TLS with a locally trusted certificate."""
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "server.pem"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        body = scope["http_version"].encode()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]}
        )
        await send({"type": "http.response.body", "body": body})

    config = Config()
    config.bind = [f"127.0.0.1:{unused_tcp_port}"]
    config.certfile = config.keyfile = str(tmp_path / "server.pem")
    config.accesslog = config.errorlog = None
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, config, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    await asyncio.sleep(0.2)
    yield f"https://localhost:{unused_tcp_port}", str(tmp_path / "ca.pem")
    stop.set()
    await asyncio.wait_for(task, 10)


async def test_pool_stats_show_http2_connection_over_tls(h2_server):
    url, ca_bundle = h2_server
    http_client.configure(HTTPSettings(http2=True, ca_bundle=ca_bundle))
    responses = await asyncio.gather(*(http_client.get(f"{url}/") for _ in range(5)))
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert {r.text for r in responses} == {"2"}
    stats = http_client.get_pool_stats()
    assert stats.http2 == 1
    assert stats.http1 == 0
    assert stats.connections == 1
    (row,) = stats.origins
    assert row.origin == url
    assert row.http2 == 1
    await http_client.close()
    assert http_client.get_pool_stats().connections == 0
