"""Parity tests for each httpx/httpcore internal the glue relies on: an upgrade that moves one fails here."""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import AsyncIterator

import httpcore
import httpx
import pytest

from services.transport import httpx_glue as glue


def test_glue_header_list_is_httpx_layout_of_raw_lowercased_value() -> None:
    headers = httpx.Headers([("X-One", "1"), ("x-two", "2"), ("X-One", "3")])
    assert glue.header_list(headers) == [
        (b"X-One", b"x-one", b"1"),
        (b"x-two", b"x-two", b"2"),
        (b"X-One", b"x-one", b"3"),
    ]


def test_glue_build_response_equals_a_response_built_by_httpx() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")
    raw = [(b"Content-Type", b"content-type", b"text/plain"), (b"Set-Cookie", b"set-cookie", b"a=1")]
    ours = glue.build_response(200, raw, httpx.ByteStream(b"hi"), request, {"http_version": b"HTTP/1.1"})
    theirs = httpx.Response(
        200, headers=[(b"Content-Type", b"text/plain"), (b"Set-Cookie", b"a=1")], request=request
    )
    assert ours.headers.multi_items() == theirs.headers.multi_items()
    assert ours.headers.raw == theirs.headers.raw
    assert ours.headers["content-type"] == "text/plain"
    assert ours.http_version == "HTTP/1.1"


def test_glue_build_response_sets_every_attribute_response_init_sets() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")
    stream = httpx.ByteStream(b"hi")
    raw = [(b"ETag", b"etag", b'"1"')]
    extensions = {"http_version": b"HTTP/1.1", "reason_phrase": b"OK"}
    ours = glue.build_response(200, list(raw), stream, request, dict(extensions))
    theirs = httpx.Response(
        200, headers=[(b"ETag", b'"1"')], stream=stream, request=request, extensions=extensions
    )
    assert vars(ours).keys() == vars(theirs).keys()
    assert vars(ours.headers) == vars(theirs.headers)
    assert {k: v for k, v in vars(ours).items() if k != "headers"} == {
        k: v for k, v in vars(theirs).items() if k != "headers"
    }
    assert (ours.status_code, ours.reason_phrase, ours.http_version, ours.encoding) == (
        200,
        "OK",
        "HTTP/1.1",
        "utf-8",
    )


@pytest.mark.parametrize("content", [b"", b"body", "text", {"json": [1]}])
def test_glue_byte_stream_content_is_what_the_stream_yields(content) -> None:
    request = httpx.Request("POST", "http://127.0.0.1/", json=content) if isinstance(content, dict) else None
    request = request or httpx.Request("POST", "http://127.0.0.1/", content=content)
    assert isinstance(request.stream, httpx.ByteStream)
    assert glue.byte_stream_content(request.stream) == b"".join(request.stream) == request.content


async def test_glue_set_content_leaves_what_read_leaves() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")
    ours = httpx.Response(200, stream=httpx.ByteStream(b"body"), request=request)
    glue.set_content(ours, b"body")
    theirs = httpx.Response(200, stream=httpx.ByteStream(b"body"), request=request)
    await theirs.aread()
    assert (ours.content, ours.is_stream_consumed, ours.is_closed) == (b"body", True, True)
    assert (theirs.content, theirs.is_stream_consumed, theirs.is_closed) == (b"body", True, True)
    assert await ours.aread() == b"body"


async def test_glue_build_read_response_leaves_what_httpx_leaves_after_read() -> None:
    request = httpx.Request("GET", "http://127.0.0.1/")
    raw = [(b"ETag", b"etag", b'"a"'), (b"Content-Length", b"content-length", b"4")]
    ours = glue.build_read_response(200, list(raw), b"body", request, {"cache": "hit"})
    theirs = httpx.Response(
        200,
        headers=[(b"ETag", b'"a"'), (b"Content-Length", b"4")],
        stream=httpx.ByteStream(b"body"),
        request=request,
        extensions={"cache": "hit"},
    )
    await theirs.aread()
    theirs.elapsed = datetime.timedelta(0)
    mine, httpx_own = dict(vars(ours)), dict(vars(theirs))
    del httpx_own["_decoder"]  # made on first use by _get_content_decoder, as set_content leaves it
    assert httpx_own.pop("_num_bytes_downloaded") == 4
    assert mine.pop("_num_bytes_downloaded") == 0  # nothing came off the wire for a stored body
    assert mine.keys() == httpx_own.keys()  # a field httpx adds or renames fails here
    headers, httpx_headers = mine.pop("headers"), httpx_own.pop("headers")
    assert vars(headers).keys() == vars(httpx_headers).keys()
    assert (headers.raw, headers.encoding) == (httpx_headers.raw, httpx_headers.encoding)
    assert type(mine.pop("stream")) is type(httpx_own.pop("stream"))
    assert mine == httpx_own
    assert (await ours.aread(), [c async for c in ours.aiter_bytes()]) == (b"body", [b"body"])
    assert ours.text == "body" and ours.elapsed == datetime.timedelta(0)


def test_glue_read_decoded_decodes_through_httpx_decoders() -> None:
    import gzip  # noqa: PLC0415

    request = httpx.Request("GET", "http://127.0.0.1/")
    body = gzip.compress(b"x" * 1000)
    response = httpx.Response(
        200, headers={"content-encoding": "gzip"}, stream=httpx.ByteStream(body), request=request
    )
    glue.read_decoded(response, None)
    assert response.content == b"x" * 1000


def test_glue_environment_proxies_reads_proxy_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    monkeypatch.setenv("NO_PROXY", "internal.test")
    proxies = glue.environment_proxies()
    assert proxies["https://"] == "http://127.0.0.1:3128"
    assert "all://*internal.test" in proxies
    assert proxies["all://*internal.test"] is None


async def test_glue_client_transports_and_transport_for_url_honour_mounts() -> None:
    default = httpx.AsyncHTTPTransport()
    mounted = httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=default, mounts={"https://": mounted}) as client:
        assert glue.client_transports(client) == [default, mounted]
        assert glue.transport_for_url(client, httpx.URL("http://127.0.0.1/")) is default
        assert glue.transport_for_url(client, httpx.URL("https://127.0.0.1/")) is mounted


async def test_glue_redirect_request_matches_what_httpx_sends() -> None:
    async with httpx.AsyncClient() as client:
        request = client.build_request("POST", "http://127.0.0.1/a", content=b"data")
        response = httpx.Response(303, headers={"location": "/b"}, request=request)
        redirect = client._build_redirect_request(request, response)
    assert (redirect.method, str(redirect.url), redirect.content) == ("GET", "http://127.0.0.1/b", b"")


@pytest.fixture
async def hello_server() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi")
            await writer.drain()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_glue_reads_an_httpcore_pool_through_its_internals(hello_server: int) -> None:
    transport = httpx.AsyncHTTPTransport()
    async with httpx.AsyncClient(transport=transport) as client:
        await client.get(f"http://127.0.0.1:{hello_server}/")
        pool = glue.httpcore_pool(transport)
        assert pool is not None
        state = glue.httpcore_pool_state(pool)
    assert [(c.origin, c.state, c.http_version) for c in state.connections] == [
        (f"http://127.0.0.1:{hello_server}", "idle", "HTTP/1.1")
    ]
    assert state.queued == {}


def test_glue_replace_httpcore_pool_swaps_it_or_refuses() -> None:
    transport = httpx.AsyncHTTPTransport()
    pool = httpcore.AsyncConnectionPool()
    glue.replace_httpcore_pool(transport, pool)
    assert glue.httpcore_pool(transport) is pool
    del transport._pool
    with pytest.raises(RuntimeError, match="no longer keeps its pool"):
        glue.replace_httpcore_pool(transport, pool)


async def _hook(_: object) -> None:
    """An event hook that does nothing."""


@pytest.mark.parametrize(
    ("setup", "plain"),
    [
        (lambda c: None, True),
        (lambda c: c.cookies.set("a", "1", domain="127.0.0.1"), False),
        (lambda c: (c.cookies.set("a", "1", domain="127.0.0.1"), c.cookies.delete("a")), True),
        (lambda c: setattr(c, "params", {"q": "1"}), False),
        (lambda c: setattr(c, "auth", ("user", "secret")), False),
        (lambda c: c.event_hooks["request"].append(_hook), False),
        (lambda c: c.event_hooks["response"].append(_hook), False),
    ],
)
async def test_glue_build_request_fast_only_for_a_client_that_adds_nothing(setup, plain) -> None:
    client = httpx.AsyncClient()
    setup(client)
    fast = glue.build_request_fast(client, "GET", "http://127.0.0.1/a", {})
    assert (fast is not None) == plain
    await client.aclose()
    assert glue.build_request_fast(client, "GET", "http://127.0.0.1/a", {}) is None  # closed


async def test_glue_plain_transport_for_steps_aside_for_auth_hooks_and_userinfo() -> None:
    default, mounted = httpx.AsyncHTTPTransport(), httpx.AsyncHTTPTransport()
    url = httpx.URL("http://127.0.0.1/")
    async with httpx.AsyncClient(transport=default, mounts={"https://": mounted}) as client:
        assert glue.plain_transport_for(client, url) is default
        assert glue.plain_transport_for(client, httpx.URL("https://127.0.0.1/")) is mounted
        assert glue.plain_transport_for(client, httpx.URL("http://user:pw@127.0.0.1/")) is None
        client.auth = ("user", "pw")
        assert glue.plain_transport_for(client, url) is None
    for hooks in ({"request": [print]}, {"response": [print]}):
        async with httpx.AsyncClient(transport=default, event_hooks=hooks) as client:  # type: ignore[arg-type]
            assert glue.plain_transport_for(client, url) is None
    async with httpx.AsyncClient(transport=default) as client:
        assert glue.plain_transport_for(client, url) is glue.transport_for_url(client, url) is default
