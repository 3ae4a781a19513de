"""RFC 9112 framing and RFC 9110 field rules in Courier's HTTP/1.1 transport, fed raw bytes."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
import trustme

from services.config import HTTPSettings
from services.http_client import http_client
from services.transport.pool import TRAILERS, FastTransport
from tests.services.transport.conftest import answer, ok, read_request, states, wait_until

EVIL = (
    b"HTTP/1.1 302 Found\r\nLocation: /evil\r\nSet-Cookie: evil=1; Path=/\r\nContent-Length: 7\r\n\r\nhijack!"
)


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=FastTransport(), timeout=5) as c:
        yield c


@pytest.fixture
def service() -> None:
    """The shared client with no retries and no cache, so each test sees exactly one exchange."""
    http_client.configure(HTTPSettings(retries=0, cache=False, deadline=5))


async def get(c: httpx.AsyncClient, url: str, *, stream: bool) -> httpx.Response:
    """GET through the fetch path (`stream=False`) or the streaming path, body read either way."""
    if not stream:
        return await c.get(url)
    response = await c.send(c.build_request("GET", url), stream=True)
    await response.aread()
    return response


# --- 1. a response ends at its message boundary (RFC 9112 §6.3); what follows is never parsed into it ---


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    "after",
    [
        pytest.param(EVIL, id="second-full-response"),
        pytest.param(b"\x00garbage\r\n\r\n", id="garbage"),
        pytest.param(EVIL[:20], id="second-response-split-across-reads"),
    ],
)
async def test_http11_bytes_after_a_response_are_not_parsed_into_it(raw_server, client, stream, after):
    rest = EVIL[20:] if after == EVIL[:20] else b""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(ok(b"mine") + after)
        await writer.drain()
        if rest:
            await asyncio.sleep(0.05)
            writer.write(rest)
        await reader.read()

    url, server = await raw_server(handle)
    response = await get(client, url, stream=stream)
    assert (response.status_code, response.reason_phrase, response.content) == (200, "OK", b"mine")
    assert response.headers.multi_items() == [("content-length", "4")]
    await wait_until(lambda: states(client) == [])  # the connection is closed, not kept for reuse
    server.handler = answer(ok(b"next"))
    assert (await client.get(url)).text == "next"  # its own answer, on a new connection
    assert server.accepted == 2


async def test_http11_unsolicited_redirect_and_cookie_are_never_followed_or_stored(raw_server, service):
    url, server = await raw_server(answer(ok(b"mine") + EVIL))
    response = await http_client.get(f"{url}/start")
    assert (response.status_code, response.text, response.history) == (200, "mine", [])
    server.handler = answer(ok(b"fresh"))  # for the next connection
    client = await http_client.get_client()
    assert "evil" not in client.cookies
    assert (await http_client.get(f"{url}/again")).text == "fresh"
    assert server.accepted == 2
    stats = http_client.get_pool_stats()
    assert (stats.connections, stats.active, stats.idle) == (1, 0, 1)


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(ok(b"body") + b"extra", id="keep-alive"),
        pytest.param(ok(b"body", b"Connection: close\r\n") + b"extra", id="connection-close"),
    ],
)
async def test_http11_bytes_after_content_length_body_return_the_body_and_drop_connection(
    raw_server, client, raw
):
    url, server = await raw_server(answer(raw, ok(b"next")))
    assert (await client.get(url)).content == b"body"
    await wait_until(lambda: states(client) == [])
    server.handler = answer(ok(b"next"))
    assert (await client.get(url)).text == "next"
    assert server.accepted == 2


@pytest.mark.parametrize(
    "raw", [b"HTTP/1.1 204 No Content\r\n\r\nxyz", b"HTTP/1.1 304 Not Modified\r\n\r\nxyz"]
)
async def test_http11_204_304_end_at_their_head_and_bytes_after_drop_connection(raw_server, client, raw):
    url, _server = await raw_server(answer(raw))
    response = await client.get(url)
    assert (response.content, response.headers.raw) == (b"", [])
    await wait_until(lambda: states(client) == [])


async def test_http11_bytes_after_head_answer_drop_connection(raw_server, client):
    url, _server = await raw_server(answer(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nbody"))
    response = await client.head(url)
    assert (response.status_code, response.content, response.headers["content-length"]) == (200, b"", "4")
    await wait_until(lambda: states(client) == [])


# --- 2. chunked trailers are not headers (RFC 9110 §6.5) ---

TRAILED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nplai\r\n1\r\nn\r\n0\r\n"
    b"Set-Cookie: trailer=1; Path=/\r\nContent-Encoding: gzip\r\nLocation: /trailer\r\n"
    b"X-Checksum: abc\r\n\r\n"
)


@pytest.mark.parametrize("stream", [False, True])
async def test_http11_trailers_stay_out_of_headers(raw_server, client, stream):
    url, server = await raw_server(answer(TRAILED, ok(b"next")))
    response = await get(client, url, stream=stream)
    assert response.content == b"plain"
    assert response.headers.multi_items() == [("transfer-encoding", "chunked")]
    trailers = response.extensions[TRAILERS]
    assert trailers["x-checksum"] == "abc"
    assert trailers.get_list("set-cookie") == ["trailer=1; Path=/"]
    assert (await client.get(url)).text == "next"
    assert server.accepted == 1


async def test_http11_trailer_cookie_and_location_are_not_used(raw_server, service):
    url, _ = await raw_server(answer(TRAILED))
    response = await http_client.get(url)
    assert (response.text, response.history) == ("plain", [])
    assert not (await http_client.get_client()).cookies


async def test_http11_response_without_trailers_has_no_trailer_extension(raw_server, client):
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    url, _ = await raw_server(answer(chunked))
    assert TRAILERS not in (await client.get(url)).extensions


# --- 3. optional whitespace around a field value is not part of it (RFC 9110 §5.5) ---


async def test_http11_field_values_lose_surrounding_whitespace(raw_server, client):
    head = b"X-Spaces:   a b  \r\nX-Tabs:\t\tc\t \t\r\nX-Empty: \t \r\n"
    url, _ = await raw_server(answer(ok(b"", head)))
    response = await client.get(url)
    assert response.headers.raw[1:] == [(b"X-Spaces", b"a b"), (b"X-Tabs", b"c"), (b"X-Empty", b"")]


@pytest.mark.parametrize("padding", [b"   ", b"\t", b" \t "])
async def test_http11_redirect_location_with_trailing_whitespace(raw_server, service, padding):
    moved = b"HTTP/1.1 302 Found\r\nLocation: /target%b\r\nContent-Length: 0\r\n\r\n" % padding
    url, _server = await raw_server(answer(moved, ok(b"landed")))
    response = await http_client.get(f"{url}/start")
    assert (str(response.url), response.text) == (f"{url}/target", "landed")


# --- 5. a Transfer-Encoding other than chunked is refused, never handed back as the body ---


@pytest.mark.parametrize(
    "framing",
    [
        b"Transfer-Encoding: gzip, chunked\r\n",
        b"Transfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: identity\r\n",
    ],
)
async def test_http11_transfer_coding_other_than_chunked_is_refused(raw_server, client, framing):
    packed = gzip.compress(b"secret")
    raw = b"HTTP/1.1 200 OK\r\n%b\r\n%x\r\n%b\r\n0\r\n\r\n" % (framing, len(packed), packed)
    url, _ = await raw_server(answer(raw))
    with pytest.raises(httpx.RemoteProtocolError, match="Transfer-Encoding"):
        await client.get(url)
    assert states(client) == []


# --- 6. obs-fold becomes a space (RFC 9112 §5.2); a NUL in the reason phrase is refused ---


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"X-Fold: a\r\n b\r\n", [(b"X-Fold", b"a b")]),
        (b"X-Fold: a  \r\n\t  b \r\n  c\r\nX-Next: d\r\n", [(b"X-Fold", b"a   b  c"), (b"X-Next", b"d")]),
        (b"X-First: 1\r\nX-Fold: a\r\n b\r\n", [(b"X-First", b"1"), (b"X-Fold", b"a b")]),
    ],
)
async def test_http11_obs_fold_becomes_a_space(raw_server, client, head, expected):
    url, server = await raw_server(answer(ok(b"body", head), ok(b"next")))
    response = await client.get(url)
    assert (response.headers.raw[1:], response.content) == (expected, b"body")  # what h11 makes of it
    assert (await client.get(url)).text == "next"
    assert server.accepted == 1


async def test_http11_obs_fold_in_a_head_split_across_reads(raw_server, client):
    raw = ok(b"body", b"X-Pad: " + b"p" * 3000 + b"\r\nX-Fold: a\r\n b\r\n")
    cut = raw.index(b"\r\n b") + 1

    async def in_two_parts(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(raw[:cut])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(raw[cut:])
        await reader.read()

    url, _ = await raw_server(in_two_parts)
    response = await client.get(url)
    assert (response.headers["x-fold"], response.content) == ("a b", b"body")


async def test_http11_obs_fold_before_any_field_is_refused(raw_server, client):
    url, _ = await raw_server(answer(b"HTTP/1.1 200 OK\r\n X-Sneaky: 1\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(httpx.RemoteProtocolError, match="whitespace"):
        await client.get(url)


async def test_http11_nul_in_reason_phrase_is_refused(raw_server, client):
    url, _ = await raw_server(answer(b"HTTP/1.1 200 O\x00K\r\nContent-Length: 0\r\n\r\n"))
    with pytest.raises(httpx.RemoteProtocolError, match="NUL"):
        await client.get(url)
    assert states(client) == []


# --- deliberate strictness: each refusal names what the server did wrong ---


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok", "bare LF"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok", "Content-Length twice"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 2\r\n\r\n2\r\nok\r\n0\r\n\r\n",
            "both Content-Length and Transfer-Encoding",
        ),
    ],
)
async def test_http11_strict_refusals_name_the_fault(raw_server, client, raw, match):
    url, _ = await raw_server(answer(raw))
    with pytest.raises(httpx.RemoteProtocolError, match=match):
        await client.get(url)
    assert states(client) == []


async def test_http11_a_1xx_content_length_does_not_frame_the_final_response(raw_server):
    # RFC 9110 §15.2: a 1xx ends at its head; what it declares is not the final response's length.
    early = b"HTTP/1.1 103 Early Hints\r\nContent-Length: 999999\r\n\r\n"
    final = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"
    url, _ = await raw_server(answer(early + final))
    transport = FastTransport()
    try:
        response = await transport.fetch(httpx.Request("GET", url + "/"), max_bytes=100)
    finally:
        await transport.aclose()
    assert (response.status_code, response.content) == (200, b"ok")


# --- what we send: a request head that could split or smuggle a request is refused, as stock httpx does ---


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        pytest.param("GET", {"X-Token": "secret\r\nEvil: 1"}, id="crlf-in-value"),
        pytest.param("GET", {"X-Token": "secret\nEvil: 1"}, id="lf-in-value"),
        pytest.param("GET", {"X-Token": "secret\x00"}, id="nul-in-value"),
        pytest.param("GET", {"X-Token": " secret"}, id="leading-whitespace"),
        pytest.param("GET", {"X-Token:": "secret"}, id="colon-in-name"),
        pytest.param("GET / HTTP/1.1\r\nEvil:", {}, id="method-with-a-line"),
    ],
)
async def test_http11_request_head_injection_is_refused_like_stock_httpx(raw_server, client, method, headers):
    url, server = await raw_server(answer(ok(), ok()))
    with pytest.raises(httpx.LocalProtocolError) as ours:
        await client.request(method, url, headers=headers)
    assert ours.value.request.method == method.upper()
    assert "secret" not in str(ours.value)  # a header value may be a credential
    assert server.accepted == 0  # refused before a connection was taken
    async with httpx.AsyncClient() as stock:
        with pytest.raises(httpx.LocalProtocolError):
            await stock.request(method, url, headers=headers)
    assert (
        await client.get(url, headers={"X-Token": "a \t b"})
    ).status_code == 200  # inner whitespace is fine


# --- 7. a sync iterator as content gets httpx's own RuntimeError ---


async def test_http11_sync_iterator_content_raises_httpx_runtime_error(raw_server, service):
    def parts() -> Iterator[bytes]:
        yield b"a"

    url, server = await raw_server(answer(ok()))
    with pytest.raises(RuntimeError, match="sync request with an AsyncClient"):
        await http_client.post(url, content=parts())
    assert http_client.get_pool_stats().connections == 0
    assert server.accepted == 0  # refused before a connection was taken


# --- extensions["network_stream"]: the socket and TLS details, as httpcore's stream gives them ---


@pytest.mark.parametrize("stream", [False, True])
async def test_http11_network_stream_extension_reports_the_socket(raw_server, client, stream):
    url, _ = await raw_server(answer(ok()))
    response = await get(client, url, stream=stream)
    network = response.extensions["network_stream"]
    port = int(url.rsplit(":", 1)[1])
    assert network.get_extra_info("server_addr") == ("127.0.0.1", port)
    assert network.get_extra_info("client_addr")[0] == "127.0.0.1"
    assert network.get_extra_info("socket") is not None
    assert network.get_extra_info("ssl_object") is None
    assert network.get_extra_info("no such thing") is None


async def test_http11_network_stream_extension_gives_the_peer_certificate(raw_server):
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    url, _ = await raw_server(answer(ok()), tls=server_context)
    async with httpx.AsyncClient(transport=FastTransport(ssl_context=client_context)) as c:
        response = await c.get(url)
    ssl_object = response.extensions["network_stream"].get_extra_info("ssl_object")
    assert ssl_object.getpeercert()["subjectAltName"] == (("IP Address", "127.0.0.1"),)


# --- http_version is what the status line said, HEAD answers included ---


@pytest.mark.parametrize(("version", "method"), [(b"1.0", "HEAD"), (b"2.0", "GET"), (b"1.0", "GET")])
async def test_http11_http_version_is_the_status_lines(raw_server, client, version, method):
    url, _ = await raw_server(answer(b"HTTP/%b 200 OK\r\nContent-Length: 2\r\n\r\nok" % version))
    response = await client.request(method, url)
    assert response.http_version == f"HTTP/{version.decode()}"
