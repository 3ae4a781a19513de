"""Every use of httpx's and httpcore's private API, in one place.

httpx has had no release since 0.28.1 and its maintained fork (httpx2) keeps the same internals for now;
an upgrade or a move to the fork is a change to this file and a run of
`tests/services/transport/test_httpx_glue.py`, which pins each name used here. The suite's
`tests/test_architecture.py` fails if any other module reaches into `httpx._*`, `httpcore._*` or a
private attribute of their objects.

Besides small accessors, this holds `build_request_fast`: what `httpx.AsyncClient.build_request` does
for a plain request, without `Request.__init__` (2.5 us instead of 6.6 us, commit 3ed197c).
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Iterable, Mapping
from http.cookiejar import CookieJar
from typing import Any

import httpcore
import httpx
from httpx._client import ClientState, UseClientDefault
from httpx._types import (
    AuthTypes,
    CookieTypes,
    HeaderTypes,
    QueryParamTypes,
    RequestContent,
    RequestData,
    RequestExtensions,
    RequestFiles,
    TimeoutTypes,
)
from httpx._utils import get_environment_proxies

from services.errors import too_large
from services.stats import ConnectionSnapshot, ConnectionState, PoolState

__all__ = [
    "AuthTypes",
    "CookieTypes",
    "HeaderTypes",
    "QueryParamTypes",
    "RequestContent",
    "RequestData",
    "RequestExtensions",
    "RequestFiles",
    "TimeoutTypes",
    "UseClientDefault",
    "build_read_response",
    "build_redirect_request",
    "build_request_fast",
    "build_response",
    "byte_stream_content",
    "client_transports",
    "environment_proxies",
    "header_list",
    "httpcore_pool_state",
    "is_client_default",
    "plain_transport_for",
    "read_capped",
    "read_decoded",
    "refuse_declared_size",
    "replace_httpcore_pool",
    "send_handling_redirects",
    "set_content",
    "transport_for_url",
]

RawHeaders = list[tuple[bytes, bytes, bytes]]
# object.__new__ bound once: the glue builds requests, responses and headers without their __init__.
_new_response = httpx.Response.__new__
_new_request = httpx.Request.__new__
_new_header_map = httpx.Headers.__new__


# --- headers, requests and responses ------------------------------------------------------------


def header_list(headers: httpx.Headers) -> RawHeaders:
    """httpx.Headers' own list of (raw name, lowercased name, value): read it without copies."""
    return headers._list


def build_response(
    status: int, headers: RawHeaders, stream: Any, request: httpx.Request, extensions: dict[str, Any]
) -> httpx.Response:
    """What `httpx.Response(status, stream=..., request=..., extensions=...)` builds, taking ownership of
    `headers` (already in httpx's layout, so nothing re-normalizes them) and `extensions`.

    Without `Response.__init__` and `Headers.__init__`: 5.3k instructions a call instead of 13.7k.
    """
    header_map = _new_headers(headers)
    response = _new_response(httpx.Response)
    response.status_code = status
    response.headers = header_map
    response._request = request
    response.next_request = None
    response.extensions = extensions
    response.history = []
    response.is_closed = False
    response.is_stream_consumed = False
    response.default_encoding = "utf-8"
    response.stream = stream
    response._num_bytes_downloaded = 0
    return response


# A response answered without waiting (from the cache) took no time.
_NO_TIME = datetime.timedelta(0)


def build_read_response(
    status: int, headers: RawHeaders, body: bytes, request: httpx.Request, extensions: dict[str, Any]
) -> httpx.Response:
    """A response already read into `body`, with no time elapsed: what `Response(...)`, `read()` and
    setting `elapsed` leave, set directly (the cache's hits and revalidations build one per answer)."""
    response = build_response(status, headers, httpx.ByteStream(body), request, extensions)
    response.is_closed = True
    response.is_stream_consumed = True
    response._content = body
    response._elapsed = _NO_TIME
    return response


def _new_headers(raw: RawHeaders) -> httpx.Headers:
    """An `httpx.Headers` over `raw` as it is, in httpx's layout (no encoding guessed yet)."""
    headers = _new_header_map(httpx.Headers)
    headers._list = raw
    headers._encoding = None
    return headers


def byte_stream_content(stream: httpx.ByteStream) -> bytes:
    """The bytes an `httpx.ByteStream` yields, without a generator to iterate."""
    return stream._stream


def set_content(response: httpx.Response, body: bytes) -> None:
    """Mark `response` read with `body`, what `Response.read()` leaves, without its generators."""
    response._content = body
    response.is_stream_consumed = True
    response.is_closed = True


def read_decoded(response: httpx.Response, cap: int | None) -> None:
    """Decode an in-memory body through httpx's decoders, stopping the moment it passes `cap`."""
    chunks: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        size += len(chunk)
        if cap is not None and size > cap:
            raise too_large(response.request, cap)
        chunks.append(chunk)
    response._content = b"".join(chunks)


async def refuse_declared_size(response: httpx.Response, cap: int | None) -> None:
    """Close `response` and raise `ResponseTooLargeError` if its Content-Length is past `cap`."""
    declared = response.headers.get("content-length", "")
    if cap is not None and declared.isdigit() and int(declared) > cap:
        await response.aclose()
        raise too_large(response.request, cap)


async def read_capped(response: httpx.Response, cap: int | None) -> None:
    """Read the (decoded) body, aborting the moment it passes `cap`; Content-Length is not trusted."""
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if cap is not None and size > cap:
                raise too_large(response.request, cap)
            chunks.append(chunk)
    except BaseException:
        await response.aclose()
        raise
    # What Response.aread() does, with the cap applied while reading.
    response._content = b"".join(chunks)


# --- the client ---------------------------------------------------------------------------------


def environment_proxies() -> dict[str, str | None]:
    """The proxies httpx would mount from the environment (it drops them once given transport=)."""
    return get_environment_proxies()


def transport_for_url(client: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport:
    """The transport `client` sends `url` through: honours mounts, proxies and respx."""
    return client._transport_for_url(url)


def plain_transport_for(client: httpx.AsyncClient, url: httpx.URL) -> httpx.AsyncBaseTransport | None:
    """`transport_for_url`, or None when the client or the URL brings auth or event hooks.

    Those are what `client.send` adds besides redirects and cookies: auth flows (the client's, or Basic
    auth from the URL's userinfo) and hooks. Read through the attributes behind httpx's properties, on
    every request: 3.7k instructions a call instead of 7.3k.
    """
    hooks = client._event_hooks
    if client._auth is not None or hooks["request"] or hooks["response"] or url._uri_reference.userinfo:
        return None
    return client._transport_for_url(url)  # always through it: respx's httpx mocker patches it


def is_client_default(value: object) -> bool:
    """Whether `value` is httpx's "use the client's setting" marker."""
    return isinstance(value, UseClientDefault)


def build_redirect_request(
    client: httpx.AsyncClient, request: httpx.Request, response: httpx.Response
) -> httpx.Request:
    """The request `client.send` would follow `response`'s redirect with (RFC 9110 §15.4)."""
    return client._build_redirect_request(request, response)


def send_handling_redirects(
    client: httpx.AsyncClient, request: httpx.Request, history: list[httpx.Response]
) -> Awaitable[httpx.Response]:
    """Carry on `client.send`'s redirect loop from `request`, with `history` so far."""
    return client._send_handling_redirects(request, follow_redirects=True, history=history)


def client_transports(client: httpx.AsyncClient) -> list[httpx.AsyncBaseTransport]:
    """The client's default transport and every mounted one."""
    return [client._transport, *(t for t in client._mounts.values() if t is not None)]


# --- httpcore's pool ----------------------------------------------------------------------------


def _origin_text(origin: Any) -> str:
    scheme = origin.scheme.decode() if isinstance(origin.scheme, bytes) else str(origin.scheme)
    host = origin.host.decode() if isinstance(origin.host, bytes) else str(origin.host)
    return f"{scheme}://{host}:{origin.port}"


def httpcore_pool(transport: Any) -> Any | None:
    """The httpcore pool inside an `httpx.AsyncHTTPTransport`, if it keeps one where 0.28 did."""
    pool = getattr(transport, "_pool", None)
    if pool is not None and hasattr(pool, "_connections") and hasattr(pool, "_requests"):
        return pool
    return None


def httpcore_pool_state(pool: Any) -> PoolState:
    """Read an httpcore connection pool through its private attributes (httpcore 1.0)."""
    connections = []
    for conn in list(pool._connections):
        inner = getattr(conn, "_connection", conn)
        if inner is None:
            state: ConnectionState = "connecting"
            version = "HTTP/1.1"
        else:
            state = "idle" if conn.is_idle() else "active"
            version = "HTTP/2" if type(inner).__name__.endswith("HTTP2Connection") else "HTTP/1.1"
        connections.append(ConnectionSnapshot(_origin_text(conn._origin), state, version))
    queued: dict[str, int] = {}
    for pool_request in list(pool._requests):
        if pool_request.is_queued():
            origin = _origin_text(pool_request.request.url.origin)
            queued[origin] = queued.get(origin, 0) + 1
    return PoolState(tuple(connections), queued)


def replace_httpcore_pool(transport: httpx.AsyncHTTPTransport, pool: httpcore.AsyncConnectionPool) -> None:
    """Swap the pool an `httpx.AsyncHTTPTransport` sends through (to give it another network backend).

    Raises RuntimeError if httpx no longer keeps its pool there: better to refuse than run unguarded.
    """
    if not isinstance(getattr(transport, "_pool", None), httpcore.AsyncConnectionPool):
        raise RuntimeError("httpx.AsyncHTTPTransport no longer keeps its pool in _pool")
    transport._pool = pool


# --- the service's fast path: what httpx.AsyncClient.send does, minus what a request doesn't use ---

_URL_CACHE_SIZE = 256
_EMPTY = httpx.ByteStream(b"")
# Absolute URLs as the caller gave them, parsed, with the value of their Host header.
_url_cache: dict[str, tuple[httpx.URL, bytes]] = {}
_FAST_BUILD_OPTIONS = frozenset({"params", "headers", "json", "content", "timeout"})


def _parse_absolute(url: httpx.URL | str) -> tuple[httpx.URL, bytes] | None:
    """`url` parsed once (httpx's parser costs about 6 µs a call) and its netloc; None if relative."""
    if isinstance(url, str):
        known = _url_cache.get(url)
        if known is not None:
            return known
        parsed = httpx.URL(url)
    else:
        parsed = url
    if parsed.is_relative_url:
        return None  # base_url merging is the client's business
    known = (parsed, parsed.netloc)
    if isinstance(url, str):
        if len(_url_cache) >= _URL_CACHE_SIZE:
            _url_cache.clear()
        _url_cache[url] = known
    return known


def _plain_client(client: httpx.AsyncClient) -> bool:
    """Whether the client adds nothing a request would need its generic machinery for.

    Read through the attributes behind httpx's properties: 3.3k instructions a call instead of 9.9k.
    """
    hooks = client._event_hooks
    return (
        client._auth is None
        and _no_cookies(client._cookies)
        and not client._params._dict
        and not hooks["request"]
        and not hooks["response"]
        and client._state is not ClientState.CLOSED
    )


def _no_cookies(cookies: httpx.Cookies) -> bool:
    """Whether `cookies` holds none; a stdlib jar with no domain at all needs no walk through it."""
    jar = cookies.jar
    # The stdlib jar keeps its cookies in a dict of domains (which its typing stubs leave out).
    if type(jar) is CookieJar and not jar._cookies:  # type: ignore[attr-defined]
        return True
    return not cookies


def build_request_fast(
    client: httpx.AsyncClient, method: str, url: httpx.URL | str, options: Mapping[str, Any]
) -> httpx.Request | None:
    """`client.build_request` for a plain client and simple options; None when it must go the long way."""
    if (options and not options.keys() <= _FAST_BUILD_OPTIONS) or not _plain_client(client):
        return None
    absolute = _parse_absolute(url)
    if absolute is None:
        return None
    parsed, netloc = absolute
    method = method.upper()
    defaults = client._headers._list
    if options:
        timeout = options.get("timeout", httpx.USE_CLIENT_DEFAULT)
        if isinstance(timeout, UseClientDefault):
            timeout = client._timeout
        elif not isinstance(timeout, httpx.Timeout):
            timeout = httpx.Timeout(timeout)
        extensions = {"timeout": timeout.as_dict()}
        params = options.get("params")
        extra = options.get("headers")
        content, json = options.get("content"), options.get("json")
        if extra or content is not None or json is not None or params is not None:
            headers = client._headers
            if extra:
                headers = httpx.Headers(headers)
                headers.update(extra)
            return httpx.Request(
                method,
                parsed,
                params=params,
                headers=headers,
                json=json,
                content=content,
                extensions=extensions,
            )
    else:
        extensions = {"timeout": client._timeout.as_dict()}
    if method in ("POST", "PUT", "PATCH") or _has_host(defaults):
        return httpx.Request(method, parsed, headers=client._headers, extensions=extensions)
    # A body-less request with the client's headers: what Request.__init__ and _prepare would
    # produce (Host first), built without re-parsing the URL or re-normalizing headers.
    headers = _new_headers([(b"Host", b"host", netloc), *defaults])
    request = _new_request(httpx.Request)
    request.method = method
    request.url = parsed
    request.headers = headers
    request.extensions = extensions
    request.stream = _EMPTY
    request._content = b""  # what request.read() leaves for an empty body
    return request


def _has_host(headers: Iterable[tuple[bytes, bytes, bytes]]) -> bool:
    for _, lowered, _ in headers:  # noqa: SIM110 - a plain loop: any() and its generator cost more
        if lowered == b"host":
            return True
    return False
