"""Courier's HTTP/1.1 transport against raw asyncio servers on 127.0.0.1 that send exactly what we need."""

from __future__ import annotations

import asyncio
import base64
import gzip
import ssl
from collections.abc import AsyncIterator

import httpx
import pytest
import respx
import trustme

from services.config import HTTPSettings
from services.errors import ResponseTooLargeError
from services.headers import header_names
from services.http_client import http_client
from services.transport.http11 import HTTP11Connection
from services.transport.httpx_glue import build_request_fast
from services.transport.pool import FastTransport
from tests.services.transport.conftest import (
    Handler,
    answer,
    ok,
    pool,
    read_request,
    states,
    wait_until,
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=FastTransport(), timeout=5) as c:
        yield c


async def test_transport_reads_content_length_body_and_reuses_connection(raw_server, client):
    url, server = await raw_server(answer(*(ok(b"n%d" % i) for i in range(5))))
    texts = [(await client.get(url)).text for _ in range(5)]
    assert texts == ["n0", "n1", "n2", "n3", "n4"]
    assert server.accepted == 1
    assert states(client) == ["idle"]


async def test_transport_reads_chunked_body(raw_server, client):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    url, server = await raw_server(answer(chunked, ok(b"again")))
    response = await client.get(url)
    assert response.text == "hello world"
    assert (await client.get(url)).text == "again"
    assert server.accepted == 1


async def test_transport_reads_close_delimited_body_and_drops_connection(raw_server, client):
    url, _ = await raw_server(answer(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close_after=True))
    response = await client.get(url)
    assert response.text == "until the end"
    await wait_until(lambda: states(client) == [])


async def test_transport_head_204_304_carry_no_body_and_keep_connection(raw_server, client):
    url, server = await raw_server(
        answer(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n",
            b"HTTP/1.1 204 No Content\r\n\r\n",
            b'HTTP/1.1 304 Not Modified\r\nETag: "x"\r\n\r\n',
            ok(b"after"),
        )
    )
    head = await client.head(url)
    assert (head.status_code, head.content, head.headers["content-length"]) == (200, b"", "1234")
    assert (await client.get(url)).status_code == 204
    not_modified = await client.get(url)
    assert (not_modified.status_code, not_modified.content) == (304, b"")
    assert (await client.get(url)).text == "after"
    assert server.accepted == 1


async def test_transport_skips_informational_responses(raw_server, client):
    early = b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
    url, _ = await raw_server(answer(early + ok(b"final", b"X-Final: 1\r\n")))
    response = await client.get(url)
    assert (response.status_code, response.text) == (200, "final")
    assert "link" not in response.headers
    assert response.headers["x-final"] == "1"


async def test_transport_notices_server_closing_idle_connection(raw_server, client):
    url, server = await raw_server(answer(ok(b"one"), close_after=True))
    assert (await client.get(url)).text == "one"
    await wait_until(lambda: states(client) == [])
    server.handler = answer(ok(b"two"))
    assert (await client.get(url)).text == "two"
    assert server.accepted == 2


async def test_transport_retries_idempotent_request_once_on_stale_connection(raw_server, client):
    async def first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"first"))
        await read_request(reader)  # the next request arrives; hang up without answering

    url, server = await raw_server(first)
    assert (await client.get(url)).text == "first"
    server.handler = answer(ok(b"fresh"))
    assert (await client.get(url)).text == "fresh"
    assert server.accepted == 2


async def test_transport_does_not_retry_post_on_stale_connection(raw_server, client):
    async def first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"first"))
        await read_request(reader)

    url, server = await raw_server(first)
    assert (await client.get(url)).text == "first"
    with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
        await client.post(url, content=b"order pizza")
    assert server.accepted == 1
    assert states(client) == []


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"HTTX/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "malformed HTTP response"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort", "without sending complete message body"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * 70_000 + b"\r\n\r\n", "header block exceeds"),
    ],
)
async def test_transport_bad_response_raises_clear_error(raw_server, client, raw, match):
    url, _ = await raw_server(answer(raw, close_after=True))
    with pytest.raises(httpx.RemoteProtocolError, match=match):
        await client.get(url)
    assert states(client) == []


async def test_transport_endless_header_block_fails_instead_of_hanging(raw_server, client):
    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nX-Long: ")
        for _ in range(100):  # 6.4 MB at most: far past the cap
            writer.write(b"a" * 65536)
            await writer.drain()

    url, _ = await raw_server(endless)
    with pytest.raises(httpx.RemoteProtocolError, match="header block exceeds"):
        await client.get(url)


@pytest.mark.parametrize("first_part", [40_000, 66_000])
async def test_transport_header_block_counted_across_reads(raw_server, client, first_part):
    head = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 5\r\n\r\nhello"

    async def in_two_parts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(head[:first_part])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(head[first_part:])
        await writer.drain()
        await reader.read()

    url, _ = await raw_server(in_two_parts)
    with pytest.raises(httpx.RemoteProtocolError, match="header block exceeds"):
        await client.get(url)


async def test_transport_large_body_in_one_read_is_not_taken_for_a_large_head(raw_server, client):
    body = b"b" * 200_000
    url, _ = await raw_server(answer(ok(body)))
    assert (await client.get(url)).content == body


@pytest.mark.parametrize(
    ("head", "body", "refused"),
    [
        (b"X-Big: " + b"a" * 70_000 + b"\r\nContent-Length: 200000\r\n", b"b" * 200_000, True),
        # A chunked body in tiny chunks: most of the read is framing, not body, nor head.
        (b"Transfer-Encoding: chunked\r\n", b"1\r\nb\r\n" * 20_000 + b"0\r\n\r\n", False),
    ],
)
async def test_transport_head_in_a_read_with_body_is_counted_by_itself(
    raw_server, client, head, body, refused
):
    url, _ = await raw_server(answer(b"HTTP/1.1 200 OK\r\n%b\r\n%b" % (head, body)))
    if refused:
        with pytest.raises(httpx.RemoteProtocolError, match="header block exceeds"):
            await client.get(url)
    else:
        assert (await client.get(url)).content == b"b" * 20_000


async def test_transport_speaks_tls_with_local_certificate(raw_server):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    url, server = await raw_server(answer(ok(b"secret"), ok(b"again")), tls=server_context)
    async with httpx.AsyncClient(transport=FastTransport(ssl_context=client_context)) as c:
        assert (await c.get(url)).text == "secret"
        assert (await c.get(url)).text == "again"
        assert server.accepted == 1
    async with httpx.AsyncClient(transport=FastTransport(ssl_context=ssl.create_default_context())) as c:
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await c.get(url)


async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await read_request(reader)
    await reader.read()


async def test_transport_read_timeout(raw_server, client):
    url, _ = await raw_server(hold)
    with pytest.raises(httpx.ReadTimeout):
        await client.get(url, timeout=httpx.Timeout(5, read=0.1))
    assert states(client) == []


async def test_transport_read_timeout_during_body(raw_server, client):
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
        await reader.read()

    url, _ = await raw_server(stall)
    with pytest.raises(httpx.ReadTimeout):
        await client.get(url, timeout=httpx.Timeout(5, read=0.1))
    assert states(client) == []


async def test_transport_write_timeout(raw_server, client):
    async def never_reads(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def body() -> AsyncIterator[bytes]:
        for _ in range(256):  # 256 MB at most; the kernel's buffers fill long before
            yield b"x" * (1 << 20)

    url, _ = await raw_server(never_reads)
    with pytest.raises(httpx.WriteTimeout):
        await client.post(url, content=body(), timeout=httpx.Timeout(5, write=0.2))
    assert states(client) == []


async def test_transport_connect_timeout(monkeypatch, client):
    loop = asyncio.get_running_loop()

    async def never_connects(*args, **kwargs):
        await asyncio.Event().wait()

    monkeypatch.setattr(loop, "create_connection", never_connects)
    with pytest.raises(httpx.ConnectTimeout):
        await client.get("http://127.0.0.1:9/", timeout=httpx.Timeout(5, connect=0.05))
    assert states(client) == []
    assert pool(client)._total == 0


async def test_transport_connect_error(client, refused_port):
    with pytest.raises(httpx.ConnectError):
        await client.get(f"http://127.0.0.1:{refused_port}/")
    assert pool(client)._total == 0


async def test_transport_pool_timeout_and_queue_in_stats(raw_server):
    url, _ = await raw_server(hold)
    async with httpx.AsyncClient(transport=FastTransport(max_connections=1), timeout=5) as c:
        held = asyncio.create_task(c.get(url))
        await wait_until(lambda: states(c) == ["active"])
        queued = asyncio.create_task(c.get(url, timeout=httpx.Timeout(5, pool=0.2)))
        await wait_until(lambda: sum(pool(c).pool_state().queued.values()) == 1)
        with pytest.raises(httpx.PoolTimeout):
            await queued
        assert pool(c).pool_state().queued == {}
        held.cancel()
        with pytest.raises(asyncio.CancelledError):
            await held


async def test_transport_per_host_cap_queues_requests(raw_server):
    release = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            await read_request(reader)
            await release.wait()
            writer.write(ok(b"done"))
            await writer.drain()

    url, server = await raw_server(slow)
    async with httpx.AsyncClient(transport=FastTransport(max_connections_per_host=2), timeout=5) as c:
        tasks = [asyncio.create_task(c.get(url)) for _ in range(5)]
        await wait_until(lambda: sum(pool(c).pool_state().queued.values()) == 3)
        # Both connections may still be connecting on a loaded machine; they become active, no more.
        await wait_until(lambda: "connecting" not in states(c))
        assert states(c) == ["active", "active"]
        release.set()
        assert {r.text for r in await asyncio.gather(*tasks)} == {"done"}
        assert server.accepted == 2
        assert states(c) == ["idle", "idle"]


async def test_transport_cancellation_leaves_pool_consistent(raw_server, client):
    url, server = await raw_server(hold)
    task = asyncio.create_task(client.get(url))
    await wait_until(lambda: states(client) == ["active"])
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert states(client) == []
    assert pool(client)._total == 0
    server.handler = answer(ok(b"after"))
    assert (await client.get(url)).text == "after"
    assert states(client) == ["idle"]


async def test_transport_streamed_body_returns_connection_when_read(raw_server, client):
    big = b"x" * 300_000
    url, server = await raw_server(answer(ok(big), ok(big), ok(b"last")))
    async with client.stream("GET", url) as response:
        assert states(client) == ["active"]
        received = b"".join([chunk async for chunk in response.aiter_raw()])
    assert received == big
    assert states(client) == ["idle"]
    async with client.stream("GET", url) as response:
        async for _ in response.aiter_raw():
            break  # a partial read: the rest of the body is still on the wire
    assert states(client) == []
    assert (await client.get(url)).status_code == 200
    assert server.accepted == 2


async def test_transport_sends_request_body_and_headers(raw_server, client):
    seen: list[bytes] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if b"chunked" in head.lower():
                body = b""
                while (size := int(await reader.readuntil(b"\r\n"), 16)) > 0:
                    body += await reader.readexactly(size + 2)
                await reader.readexactly(2)
                body = body.replace(b"\r\n", b"")
            else:
                length = next(
                    int(h.split(b":")[1])
                    for h in head.split(b"\r\n")
                    if h.lower().startswith(b"content-length")
                )
                body = await reader.readexactly(length)
            seen.append(head)
            writer.write(ok(body))

    async def parts() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cd"

    url, server = await raw_server(echo)
    assert (await client.post(f"{url}/p?q=1", json={"a": 1}, headers={"X-Test": "yes"})).text == '{"a":1}'
    assert (await client.post(url, content=parts())).text == "abcd"
    assert seen[0].startswith(b"POST /p?q=1 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"X-Test: yes" in seen[0]
    assert b"Transfer-Encoding: chunked" in seen[1]
    assert server.accepted == 1


async def test_transport_aclose_closes_everything(raw_server):
    url, server = await raw_server(answer(ok(), ok()))
    transport = FastTransport()
    c = httpx.AsyncClient(transport=transport)
    await c.get(url)
    assert [s.state for s in transport.pool_state().connections] == ["idle"]
    await c.aclose()
    assert transport.pool_state().connections == ()
    await wait_until(lambda: all(w.is_closing() or w.transport.is_closing() for w in server.writers))


# --- the service's fast path (http_client over the default transport) ---


@pytest.fixture
def no_client_send(monkeypatch):
    """Fail any request that goes through httpx.AsyncClient.send instead of the fast path."""

    async def refuse(*args, **kwargs):
        raise AssertionError("took the slow path")

    monkeypatch.setattr(httpx.AsyncClient, "send", refuse)


async def test_service_fast_path_follows_redirects_with_history(raw_server, no_client_send):
    moved = (
        b"HTTP/1.1 302 Found\r\nLocation: /final\r\nSet-Cookie: seen=1; Path=/\r\nContent-Length: 0\r\n\r\n"
    )
    url, _ = await raw_server(answer(moved, ok(b"landed"), moved))
    response = await http_client.get(f"{url}/start", params={"q": "1"})
    assert (response.text, str(response.url)) == ("landed", f"{url}/final")
    assert [r.status_code for r in response.history] == [302]
    assert response.elapsed.total_seconds() >= 0
    client = await http_client.get_client()
    assert client.cookies["seen"] == "1"  # what httpx.AsyncClient.send would have stored


async def test_service_fast_path_returns_redirect_when_not_following(raw_server, no_client_send):
    moved = b"HTTP/1.1 301 Moved\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n"
    url, _ = await raw_server(answer(moved))
    response = await http_client.get(url, follow_redirects=False, raise_for_status=False)
    assert response.status_code == 301
    assert response.next_request is not None
    assert str(response.next_request.url) == f"{url}/elsewhere"


async def test_service_fast_path_leaves_respx_in_charge():
    with respx.mock(using="httpx") as mock:
        route = mock.get("http://api.example/thing").respond(json={"ok": True})
        response = await http_client.get("http://api.example/thing")
    assert response.json() == {"ok": True}
    assert route.call_count == 1
    assert http_client.get_pool_stats().connections == 0  # no socket was opened


@pytest.mark.parametrize(
    ("method", "url", "options"),
    [
        ("GET", "http://example.test/a?b=1", {}),
        ("GET", "http://example.test/a", {"params": {"q": "x y"}, "timeout": 3}),
        ("DELETE", "https://example.test:8443/a", {"headers": {"X-Extra": "1", "user-agent": "other"}}),
        ("POST", "http://example.test/a", {"json": {"k": [1, 2]}}),
        ("PUT", "http://example.test/a", {}),
        ("patch", "http://example.test/a", {}),
        ("get", "http://example.test/a", {"timeout": httpx.Timeout(2, read=5)}),
        ("HEAD", "http://[::1]:8080/", {}),
    ],
)
async def test_service_fast_request_matches_client_build_request(method, url, options):
    async with httpx.AsyncClient(headers={"User-Agent": "Courier/test"}, timeout=7) as c:
        fast = build_request_fast(c, method, url, dict(options))
        slow = c.build_request(method, url, **options)
    assert fast is not None
    assert (fast.method, fast.url, fast.headers.raw) == (slow.method, slow.url, slow.headers.raw)
    assert fast.extensions == slow.extensions
    assert fast.content == slow.content


def _transport_for(client: httpx.AsyncClient, url: str) -> httpx.AsyncBaseTransport:
    return client._transport_for_url(httpx.URL(url))


@pytest.mark.parametrize(
    ("settings", "http_kind", "https_kind"),
    [
        ({}, FastTransport, FastTransport),
        ({"http2": True}, FastTransport, FastTransport),  # ours speaks HTTP/2 too
        ({"http2": True, "transport": "fast"}, FastTransport, FastTransport),
        ({"transport": "httpcore"}, httpx.AsyncHTTPTransport, httpx.AsyncHTTPTransport),
    ],
)
async def test_service_transport_setting_picks_transport_per_scheme(
    monkeypatch, settings, http_kind, https_kind
):
    for key in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    http_client.configure(HTTPSettings(**settings))
    client = await http_client.get_client()
    assert type(_transport_for(client, "http://example.test/")) is http_kind
    assert type(_transport_for(client, "https://example.test/")) is https_kind


async def test_service_environment_proxy_stays_on_httpx_proxy_transport(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.test:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    http_client.configure(HTTPSettings(http2=False))
    client = await http_client.get_client()
    proxied = _transport_for(client, "https://example.test/")
    assert isinstance(proxied, httpx.AsyncHTTPTransport)
    assert "Proxy" in type(proxied._pool).__name__
    assert type(_transport_for(client, "http://example.test/")) is FastTransport
    assert type(_transport_for(client, "https://internal.test/")) is FastTransport


async def test_transport_fetch_reads_large_and_compressed_bodies(raw_server):
    big = bytes(range(256)) * 4096  # 1 MiB: past the read high-water mark, so reading pauses
    packed = gzip.compress(b'{"packed": true}')
    gz = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%b" % (len(packed), packed)
    url, server = await raw_server(answer(ok(big), gz))
    transport = FastTransport()
    async with httpx.AsyncClient(transport=transport) as c:
        async with asyncio.timeout(10):
            response = await transport.fetch(c.build_request("GET", url))
            assert response.content == big
            compressed = await transport.fetch(c.build_request("GET", url))
        assert compressed.json() == {"packed": True}
        assert response.elapsed.total_seconds() >= 0
        assert server.accepted == 1


def piecemeal(body: bytes, pieces: int) -> Handler:
    """A handler answering each request with a Content-Length body sent in `pieces` writes, 20 ms apart."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        step = len(body) // pieces
        while True:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for start in range(0, len(body), step):
                await asyncio.sleep(0.02)
                writer.write(body[start : start + step])
                await writer.drain()

    return handle


async def test_transport_fetch_wakes_once_for_a_body_that_comes_in_many_reads(raw_server, monkeypatch):
    body = bytes(range(256)) * 40
    url, _ = await raw_server(piecemeal(body, 5))
    waits: list[bool] = []
    wait = HTTP11Connection.wait

    def counted(self: HTTP11Connection, *args: object, **kwargs: object) -> object:
        waits.append(self.headers_done)
        return wait(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(HTTP11Connection, "wait", counted)
    transport = FastTransport()
    async with httpx.AsyncClient(transport=transport) as c:
        async with asyncio.timeout(10):
            assert (await transport.fetch(c.build_request("GET", url))).content == body
            assert waits.count(True) == 1  # the body's five reads woke the request once, at its end
            async with c.stream("GET", url) as streamed:  # a streamed body still gets each read
                chunks = [chunk async for chunk in streamed.aiter_raw()]
    assert b"".join(chunks) == body and len(chunks) > 1
    assert states(c) == []


async def test_transport_fetch_cap_stops_a_body_read_whole_at_the_cap(raw_server, monkeypatch):
    chunk = b"x" * 1000
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    sent: list[int] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(chunked)
        for _ in range(200):
            writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            sent.append(len(chunk))
            await writer.drain()
            await asyncio.sleep(0.005)

    url, _ = await raw_server(endless)
    transport = FastTransport()
    async with httpx.AsyncClient(transport=transport) as c:
        with pytest.raises(ResponseTooLargeError):
            await transport.fetch(c.build_request("GET", url), max_bytes=5_000)
    assert sum(sent) < 100_000  # refused once past 5,000 bytes, not at the end of the body


async def test_transport_http10_response_is_not_kept(raw_server, client):
    url, _server = await raw_server(
        answer(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", close_after=True)
    )
    response = await client.get(url)
    assert (response.http_version, response.text) == ("HTTP/1.0", "ok")
    assert states(client) == []


@pytest.mark.parametrize(
    ("header_block", "encoding"),
    [
        (b"Content-Type: text/plain\r\nX-Twice: a\r\nx-twice: b\r\n", "ascii"),
        (b"X-Name: caf\xc3\xa9\r\n", "utf-8"),
        (b"X-Name: caf\xe9\r\n", "iso-8859-1"),
    ],
)
async def test_transport_response_headers_match_what_httpx_would_build(
    raw_server, client, header_block, encoding
):
    url, _ = await raw_server(answer(ok(b"x", header_block)))
    response = await client.get(url)
    expected = httpx.Headers([tuple(line.split(b": ", 1)) for line in header_block.split(b"\r\n") if line])
    expected["Content-Length"] = "1"
    assert sorted(response.headers.multi_items()) == sorted(expected.multi_items())
    assert response.headers.encoding == encoding
    assert header_names(response) == {b"content-length"} | {k for _, k, _ in expected._list}


def test_header_names_of_a_response_built_elsewhere():
    response = httpx.Response(200, headers={"Set-Cookie": "a=1", "ETag": '"v"'})
    assert header_names(response) == {b"set-cookie", b"etag"}


def recording(*responses: bytes) -> tuple[Handler, list[bytes]]:
    """A handler like `answer` that also keeps each request head it read."""
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for raw in responses:
            heads.append(await read_request(reader))
            writer.write(raw)
            await writer.drain()
        await reader.read()

    return handle, heads


async def test_service_sends_basic_auth_from_url_userinfo(raw_server):
    handler, heads = recording(ok(b"in"))
    url, _ = await raw_server(handler)
    response = await http_client.get(url.replace("http://", "http://ann:secret@") + "/private")
    assert response.text == "in"
    assert b"authorization: basic " + base64.b64encode(b"ann:secret").lower() in heads[0].lower()


async def test_service_sends_back_cookies_a_response_set(raw_server, no_client_send):
    handler, heads = recording(ok(b"1", b"Set-Cookie: session=abc; Path=/\r\n"), ok(b"2"))
    url, _ = await raw_server(handler)
    await http_client.get(f"{url}/login")
    await http_client.get(f"{url}/me")
    assert b"cookie: session=abc" in heads[1].lower()
    assert b"cookie" not in heads[0].lower()
