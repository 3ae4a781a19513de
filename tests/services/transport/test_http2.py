"""HTTP/2 on Courier's transport, against hypercorn over TLS and a raw h2 server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import time

import hpack
import httpx
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    HeadersFrame,
    PingFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from services.config import HTTPSettings
from services.errors import ResponseTooLargeError
from services.http_client import http_client
from services.transport import http2
from services.transport.pool import FastTransport


async def wait_until(predicate, timeout: float = 5.0) -> None:
    """Poll `predicate` until true; the bound keeps a broken test from hanging."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.005)


def path_app(
    bodies: dict[str, bytes] | None = None, hold: asyncio.Event | None = None, seen: list | None = None
):
    """An ASGI app answering with its path, a canned body, or the size of the request body."""

    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        if seen is not None:
            seen.append(scope["path"])
        size = 0
        while True:
            message = await receive()
            size += len(message.get("body", b""))
            if not message.get("more_body"):
                break
        if hold is not None:
            await hold.wait()
        body = (bodies or {}).get(scope["path"])
        if body is None:
            body = str(size).encode() if scope["method"] == "POST" else scope["path"].encode()
        headers = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def h2_client(ssl_context=None, **options) -> tuple[FastTransport, httpx.AsyncClient]:
    """Our transport with HTTP/2 over TLS (given a context) or h2c, and a client on it."""
    if ssl_context is None:
        transport = FastTransport(http2_prior_knowledge=True, **options)
    else:
        transport = FastTransport(ssl_context=ssl_context, http2=True, **options)
    return transport, httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, read=2.0))


# --- against hypercorn over TLS ---------------------------------------------------------------------


async def test_http2_multiplexes_concurrent_requests_on_one_connection(hypercorn_server):
    hold, seen = asyncio.Event(), []
    server = await hypercorn_server(path_app(hold=hold, seen=seen))
    transport, client = h2_client(server.ssl_context)
    async with client:
        tasks = [asyncio.create_task(client.get(f"{server.url}/{i}")) for i in range(30)]
        await wait_until(lambda: len(seen) == 30)
        (conn,) = transport.pool_state().connections
        assert (conn.http_version, conn.state, conn.streams) == ("HTTP/2", "active", 30)
        hold.set()
        responses = await asyncio.gather(*tasks)
        assert [r.text for r in responses] == [f"/{i}" for i in range(30)]
        assert {r.http_version for r in responses} == {"HTTP/2"}
        ssl_object = responses[0].extensions["network_stream"].get_extra_info("ssl_object")
        assert ssl_object.selected_alpn_protocol() == "h2"
        (conn,) = transport.pool_state().connections
        assert (conn.state, conn.streams) == ("idle", 0)
    assert transport.pool_state().connections == ()


async def test_http2_falls_back_to_http11_when_alpn_offers_only_http11(hypercorn_server):
    server = await hypercorn_server(path_app(), alpn=("http/1.1",))
    transport, client = h2_client(server.ssl_context)
    async with client:
        first = await client.get(f"{server.url}/a")
        burst = await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(5)))
        assert first.http_version == "HTTP/1.1"
        assert first.text == "/a"
        assert {r.http_version for r in burst} == {"HTTP/1.1"}
        assert {c.http_version for c in transport.pool_state().connections} == {"HTTP/1.1"}


async def test_http2_respects_max_concurrent_streams_of_one(hypercorn_server):
    inside = peak = 0

    async def app(scope, receive, send):
        nonlocal inside, peak
        if scope["type"] != "http":
            return
        inside += 1
        peak = max(peak, inside)
        await asyncio.sleep(0.01)
        inside -= 1
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server = await hypercorn_server(app, h2_max_concurrent_streams=1)
    transport, client = h2_client(server.ssl_context)
    async with client:
        await client.get(f"{server.url}/")  # the server's SETTINGS are known from here on
        tasks = [asyncio.create_task(client.get(f"{server.url}/")) for _ in range(8)]
        await wait_until(lambda: sum(transport.pool_state().queued.values()) == 7)
        responses = await asyncio.gather(*tasks)
        assert [r.status_code for r in responses] == [200] * 8
        assert peak == 1
        assert len(transport.pool_state().connections) == 1


async def test_http2_moves_bodies_larger_than_the_default_window(hypercorn_server):
    big = bytes(range(256)) * 4096  # 1 MiB, 16x the default 64 KiB window
    server = await hypercorn_server(path_app({"/big": big}))
    _, client = h2_client(server.ssl_context)
    async with client:
        upload = await client.post(f"{server.url}/up", content=b"x" * 300_000)
        download = await client.get(f"{server.url}/big")
        async with client.stream("GET", f"{server.url}/big") as streamed:
            chunks = [chunk async for chunk in streamed.aiter_raw()]
    assert upload.text == "300000"
    assert download.content == big
    assert b"".join(chunks) == big


async def test_http2_through_the_service_keeps_caps_and_reports_streams(hypercorn_server, tls_files):
    hold, seen = asyncio.Event(), []
    server = await hypercorn_server(path_app({"/big": b"x" * 5000}, hold=hold, seen=seen))
    http_client.configure(HTTPSettings(http2=True, ca_bundle=tls_files[1], max_response_bytes=1000))
    try:
        tasks = [asyncio.create_task(http_client.get(f"{server.url}/{i}")) for i in range(5)]
        await wait_until(lambda: len(seen) == 5)
        stats = http_client.get_pool_stats()
        assert (stats.connections, stats.http2) == (1, 1)
        (row,) = stats.origins
        assert (row.origin, row.streams, row.active) == (server.url, 5, 1)
        hold.set()
        assert [r.text for r in await asyncio.gather(*tasks)] == [f"/{i}" for i in range(5)]
        with pytest.raises(ResponseTooLargeError):
            await http_client.get(f"{server.url}/big")
        assert http_client.get_pool_stats().connections == 1
    finally:
        await http_client.close()


async def test_http2_through_the_service_follows_redirects_keeps_cookies_and_streams(
    hypercorn_server, tls_files
):
    async def app(scope, receive, send):
        if scope["type"] != "http":
            return
        cookies = dict(scope["headers"]).get(b"cookie", b"")
        if scope["path"] == "/start":
            headers = [(b"location", b"/end"), (b"set-cookie", b"session=abc; Path=/")]
            await send({"type": "http.response.start", "status": 302, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for part in (b"cookie=", cookies, b";"):
            await send({"type": "http.response.body", "body": part, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    server = await hypercorn_server(app)
    http_client.configure(HTTPSettings(http2=True, ca_bundle=tls_files[1]))
    try:
        response = await http_client.get(f"{server.url}/start")
        assert (response.status_code, response.http_version) == (200, "HTTP/2")
        assert response.text == "cookie=session=abc;"
        assert [r.status_code for r in response.history] == [302]
        async with http_client.stream("GET", f"{server.url}/end") as streamed:
            assert streamed.http_version == "HTTP/2"
            assert b"".join([chunk async for chunk in streamed.aiter_bytes()]) == b"cookie=session=abc;"
        assert http_client.get_pool_stats().connections == 1
    finally:
        await http_client.close()


# --- against a raw h2 server ----------------------------------------------------------------------


async def test_http2_retries_streams_above_goaway_on_a_new_connection(raw_h2_server):
    state = {}

    async def handler(conn, event):
        first = conn is state["server"].connections[0]
        if not first:
            conn.respond(event.stream_id, b"second")
        elif event.stream_id == 1:
            conn.respond(1, b"first")
        if first and len(conn.streams_seen) == 10:
            conn.h2.close_connection(last_stream_id=1)  # RFC 9113 §6.8: 3..19 were not processed
            conn.flush()

    state["server"] = server = await raw_h2_server(handler)
    _, client = h2_client()
    async with client:
        responses = await asyncio.gather(*(client.get(f"{server.url}/{i}") for i in range(10)))
    assert sorted(r.text for r in responses) == ["first"] + ["second"] * 9
    assert len(server.connections) == 2


async def test_http2_stream_reset_by_server_fails_only_that_request(raw_h2_server):
    async def handler(conn, event):
        path = dict(event.headers)[b":path"]
        if path == b"/reset":
            conn.h2.reset_stream(event.stream_id, ErrorCodes.INTERNAL_ERROR)
            conn.flush()
        else:
            await asyncio.sleep(0.01)
            conn.respond(event.stream_id, path)

    server = await raw_h2_server(handler)
    transport, client = h2_client()
    async with client:
        ok, reset = await asyncio.gather(
            client.get(f"{server.url}/ok"), client.get(f"{server.url}/reset"), return_exceptions=True
        )
        assert isinstance(reset, httpx.RemoteProtocolError)
        assert "INTERNAL_ERROR" in str(reset)
        assert ok.text == "/ok"
        assert (await client.get(f"{server.url}/again")).text == "/again"
        assert len(transport.pool_state().connections) == 1
    assert len(server.connections) == 1


async def test_http2_cancelled_request_resets_its_stream_and_others_finish(raw_h2_server):
    release = asyncio.Event()

    async def handler(conn, event):
        await release.wait()
        if event.stream_id not in conn.resets:
            conn.respond(event.stream_id, dict(event.headers)[b":path"])
            await conn.writer.drain()

    server = await raw_h2_server(handler)
    transport, client = h2_client()
    async with client:
        tasks = [asyncio.create_task(client.get(f"{server.url}/{i}")) for i in range(5)]
        await wait_until(lambda: server.connections and len(server.connections[0].streams_seen) == 5)
        tasks[2].cancel()
        await wait_until(lambda: server.connections[0].resets == [5])
        release.set()
        done = await asyncio.gather(*tasks, return_exceptions=True)
        assert isinstance(done[2], asyncio.CancelledError)
        assert [r.text for i, r in enumerate(done) if i != 2] == ["/0", "/1", "/3", "/4"]
        (conn,) = transport.pool_state().connections
        assert conn.streams == 0


async def test_http2_answer_before_the_whole_request_body_stops_the_upload(raw_h2_server):
    async def handler(conn, event):
        conn.respond(event.stream_id, b"too large", status=413)
        conn.h2.reset_stream(event.stream_id, ErrorCodes.NO_ERROR)  # RFC 9113 §8.1
        conn.flush()

    server = await raw_h2_server(handler, early=True)
    transport, client = h2_client()
    async with client:
        response = await client.post(f"{server.url}/upload", content=b"x" * 1_000_000)
        assert (response.status_code, response.text) == (413, "too large")
        (conn,) = transport.pool_state().connections
        assert conn.streams == 0
        assert (await client.post(f"{server.url}/again", content=b"y")).status_code == 413
    assert len(server.connections) == 1


async def test_http2_read_timeout_applies_per_stream(raw_h2_server):
    async def handler(conn, event):
        if dict(event.headers)[b":path"] == b"/fast":
            conn.respond(event.stream_id)

    server = await raw_h2_server(handler)
    transport = FastTransport(http2_prior_knowledge=True)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, read=0.2)) as client:
        with pytest.raises(httpx.ReadTimeout):
            await client.get(f"{server.url}/never")
        assert (await client.get(f"{server.url}/fast")).status_code == 200
    assert server.connections[0].resets == [1]


async def test_http2_pings_an_idle_connection_and_replaces_it_when_silent(raw_h2_server, monkeypatch):
    monkeypatch.setattr(http2, "PING_AFTER", 0.0)

    async def handler(conn, event):
        conn.respond(event.stream_id)

    server = await raw_h2_server(handler)
    transport = FastTransport(http2_prior_knowledge=True)
    async with httpx.AsyncClient(transport=transport, timeout=httpx.Timeout(5.0, connect=0.3)) as client:
        await client.get(f"{server.url}/")
        await client.get(f"{server.url}/")  # the PING is answered: same connection
        assert len(server.connections) == 1
        server.connections[0].frozen = True
        assert (await client.get(f"{server.url}/")).status_code == 200  # no PONG: a new connection
        assert len(server.connections) == 2
        assert len(transport.pool_state().connections) == 1


def _frames(*frames) -> bytes:
    return b"".join(f.serialize() for f in frames)


def _garbage(conn, stream_id):
    return b"\x00\x00\x08\xfe\x00\x00\x00\x00\x01" + b"garbage!" * 8


def _endless_continuation(conn, stream_id):
    block = hpack.Encoder().encode([(b":status", b"200")])
    first = HeadersFrame(stream_id, data=block)
    return _frames(first, *(ContinuationFrame(stream_id, data=b"\x00" * 16_000) for _ in range(200)))


def _hpack_bomb(conn, stream_id):
    encoder = hpack.Encoder()
    block = encoder.encode([(b":status", b"200"), (b"x-bomb", b"b" * 4000)])
    block += b"".join(encoder.encode([(b"x-bomb", b"b" * 4000)]) for _ in range(200))  # 2 bytes each
    return _frames(HeadersFrame(stream_id, data=block, flags=["END_HEADERS"]))


def _settings_flood(conn, stream_id):
    return _frames(*(SettingsFrame(0, settings={SettingCodes.HEADER_TABLE_SIZE: 4096}) for _ in range(5000)))


def _ping_flood(conn, stream_id):
    return _frames(*(PingFrame(0, opaque_data=b"12345678") for _ in range(5000)))


def _no_status(conn, stream_id):
    block = conn.h2.encoder.encode([(b"content-type", b"text/plain")])
    return _frames(HeadersFrame(stream_id, data=block, flags=["END_HEADERS", "END_STREAM"]))


def _data_on_idle_stream(conn, stream_id):
    return _frames(DataFrame(stream_id + 2, data=b"surprise", flags=["END_STREAM"]))


def _window_overflow(conn, stream_id):
    return _frames(
        WindowUpdateFrame(0, window_increment=2**31 - 1), WindowUpdateFrame(0, window_increment=2**31 - 1)
    )


def _oversized_frame(conn, stream_id):
    return b"\x01\x00\x00\x00\x00\x00" + stream_id.to_bytes(4, "big") + b"\x00" * 65536


def _body_longer_than_declared(conn, stream_id):
    block = conn.h2.encoder.encode([(b":status", b"200"), (b"content-length", b"2")])
    return _frames(
        HeadersFrame(stream_id, data=block, flags=["END_HEADERS"]),
        DataFrame(stream_id, data=b"too long", flags=["END_STREAM"]),
    )


@pytest.mark.parametrize(
    "malformed",
    [
        _garbage,
        _endless_continuation,
        _hpack_bomb,
        _settings_flood,
        _ping_flood,
        _no_status,
        _data_on_idle_stream,
        _window_overflow,
        _oversized_frame,
        _body_longer_than_declared,
    ],
)
async def test_http2_malformed_frames_end_in_an_http_error_without_hanging_or_leaking(
    raw_h2_server, malformed
):
    async def handler(conn, event):
        conn.writer.write(malformed(conn, event.stream_id))
        # The client may hang up first (that is the point). Left unretrieved, the error would be
        # logged from the task's finalizer whenever the GC gets to it: on uvloop that was inside a
        # later test's ast.parse, whose nested ast.parse in traceback's caret code broke CPython
        # 3.11.7's AST state ("AST constructor recursion depth mismatch").
        with contextlib.suppress(ConnectionError):
            await conn.writer.drain()

    server = await raw_h2_server(handler)
    transport, client = h2_client()
    tasks_before = len(asyncio.all_tasks())
    async with asyncio.timeout(10), client:
        outcomes = await asyncio.gather(
            *(client.get(f"{server.url}/{i}") for i in range(3)), return_exceptions=True
        )
    for outcome in outcomes:
        assert isinstance(outcome, httpx.HTTPError | httpx.Response), outcome
        if isinstance(outcome, httpx.Response):
            assert outcome.status_code == 200
    assert transport.pool_state().connections == ()
    await asyncio.sleep(0.05)
    assert len(asyncio.all_tasks()) <= tasks_before


async def test_http2_offer_is_not_changed_by_another_user_of_the_clients_tls_context(
    hypercorn_server, tls_files, monkeypatch
):
    # httpcore's proxy mounts share the client's TLS context and set ALPN on it before each connect;
    # one doing so while our dial is under way must not turn our HTTP/2 offer into HTTP/1.1.
    server = await hypercorn_server(path_app())
    http_client.configure(HTTPSettings(http2=True, ca_bundle=tls_files[1]))
    client = await http_client.get_client()
    loop = asyncio.get_running_loop()
    create_connection = loop.create_connection

    async def meanwhile(*args, **kwargs):
        http_client.ssl_context.set_alpn_protocols(["http/1.1"])  # what httpcore's HTTP/1.1 mount does
        return await create_connection(*args, **kwargs)

    monkeypatch.setattr(loop, "create_connection", meanwhile)
    try:
        response = await client.get(f"{server.url}/a")
        assert (response.text, response.http_version) == ("/a", "HTTP/2")
    finally:
        await http_client.close()
