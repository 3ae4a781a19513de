"""Courier's HTTP/1.1 transport for httpx: an asyncio protocol, llhttp parsing and its own pool.

Why httptools and not aiohttp's connector: llhttp (the parser Node.js and uvicorn use) is a C parser
behind a callback API that costs a few microseconds per response, and an asyncio protocol of our own
lets the pool be exact and the responses be plain `httpx.Response` objects, their headers parsed
straight into httpx's layout. With the sockets taken out (benchmarks/no_io.py, concurrency 10),
`FastTransport.fetch` costs 17 us of client CPU per small GET, Courier's whole service 37 us and a
shared aiohttp session 45 us; against nginx, stock httpx costs about 580 us (benchmarks/http_bench.py).
"""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import httptools
import httpx
from httpx._utils import get_environment_proxies

from services.config import HTTPSettings
from services.errors import deadline_exceeded, too_large
from services.headers import HEADER_NAMES, header_names
from services.retry import Deadline
from services.stats import ConnectionSnapshot, PoolState

# h11 (httpcore) refuses header blocks over 100 KiB; llhttp has no limit of its own.
MAX_HEADER_BYTES = 64 * 1024
# Above this much unread body the socket stops being read until the consumer catches up.
READ_HIGH_WATER = 256 * 1024
# Bytes taken from a socket per read, into one buffer the pool's connections share.
READ_BUFFER_SIZE = 256 * 1024
# RFC 9110 §9.2.2: a request these methods make can be repeated without a different effect.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
DEFAULT_PORTS = {b"http": 80, b"https": 443}
# Request extension holding the call's `Deadline`: every wait of the exchange ends by then, so the
# service needs no timer of its own around a request that this transport carries.
DEADLINE = "courier.deadline"
# Timers may fire a hair early; a deadline this close counts as reached.
DEADLINE_SLACK = 0.005
# A timer firing this close to when a wait is due ends the wait instead of re-arming.
TIMER_SLACK = 0.001

Key = tuple[bytes, bytes, int]
T = TypeVar("T")


class _StaleConnectionError(Exception):
    """A kept-alive connection died before answering; the request may go again on a new one."""

    def __init__(self, error: httpx.TransportError, *, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent


class _Connection(asyncio.BufferedProtocol):
    """One HTTP/1.1 connection: feeds received bytes to llhttp and hands parsed parts to a waiter."""

    def __init__(self, pool: FastTransport, key: Key, max_header_bytes: int) -> None:
        self.pool = pool
        self.key = key
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.max_header_bytes = max_header_bytes
        self.closed = False
        self.reusable = True
        self.requests = 0
        self.idle_since = 0.0
        self.in_use = False
        self.error: httpx.TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wait_due: float | None = None  # loop time the current wait times out, unless data arrives
        self._wait_limit: float | None = None
        self._wait_reads = True
        self._last_read = 0.0
        self._write_paused = False
        self._read_paused = False
        self.deadline: Deadline | None = None
        self._begin_exchange(False)

    def _begin_exchange(self, head: bool) -> None:
        self.head = head
        self.received = False
        self.status = 0
        self.reason = b""
        # In httpx.Headers' own layout (raw name, lowercased name, value), so no pass re-normalizes it.
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.names: set[bytes] = set()  # lowercased names, for lookups that need no value
        self.headers_done = False
        self.complete = False
        self.framed = False
        self.declared = -1  # Content-Length, when the response has a valid one
        self.body: list[bytes] = []
        self.buffered = 0
        self._unparsed_head = 0  # bytes received while the head was incomplete

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def get_buffer(self, sizehint: int) -> memoryview:
        # Reads land in a buffer the pool reuses instead of a new bytes object per read: llhttp
        # copies out what it keeps before buffer_updated returns, and a fresh 256 KiB allocation per
        # read makes glibc map and fault in pages for every large body.
        return self.pool._read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.pool._read_buffer[:nbytes])

    def data_received(self, data: bytes | memoryview) -> None:
        if not self.in_use:
            # Nothing is owed on an idle connection: a late 408 or garbage means it is done for.
            self.reusable = False
            self.abort()
            return
        self.received = True
        self._last_read = self.loop.time()
        head_was_done = self.headers_done
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(httpx.RemoteProtocolError("protocol upgrades are not supported"))
            return
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            return
        if self.head and self.headers_done:
            # llhttp can't be told a response answers HEAD; a fresh parser ignores its framing.
            self.parser = httptools.HttpResponseParser(self)
        if not head_was_done and self._head_too_large(len(data)) and self.error is None:
            limit = self.max_header_bytes
            self._fail(httpx.RemoteProtocolError(f"response header block exceeds {limit} bytes"))
            return
        if self.buffered > READ_HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def _head_too_large(self, received: int) -> bool:
        """Whether the response head passed `max_header_bytes`, given `received` new bytes."""
        if not self.headers_done:
            self._unparsed_head += received
            return self._unparsed_head > self.max_header_bytes
        if self._unparsed_head + received <= self.max_header_bytes:
            return False  # the head can't be longer than everything received
        # The head ended inside a large read that also carried body: count the head itself.
        size = sum(len(name) + len(value) + 4 for name, _, value in self.headers)
        return size > self.max_header_bytes

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        self._cancel_timer()
        if not self.in_use:
            self.pool._drop_idle(self)
            return
        if self.headers_done and not self.complete and not self.framed and exc is None:
            self.complete = True  # a body delimited by the connection closing (RFC 9112 §6.3)
        elif not self.complete and self.error is None:
            if exc is not None:
                error: httpx.TransportError = httpx.ReadError(f"connection lost: {exc!r}")
            elif self.headers_done:
                error = httpx.RemoteProtocolError(
                    "peer closed connection without sending complete message body"
                )
            else:
                error = httpx.RemoteProtocolError("Server disconnected without sending a response.")
            self.error = error
        self._write_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._wake()

    # --- httptools callbacks ----------------------------------------------------------------

    def on_status(self, status: bytes) -> None:
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        lowered = name.lower()
        self.headers.append((name, lowered, value))
        self.names.add(lowered)
        if lowered == b"content-length":
            self.framed = True
            self.declared = int(value) if value.isdigit() else -1
        elif lowered == b"transfer-encoding":
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # informational; the final response follows on the same connection
        self.status = status
        self.headers_done = True
        if self.head or status in (204, 304):
            self.framed = True
        if self.head:
            self.complete = True
            if not self.parser.should_keep_alive():
                self.reusable = False

    def on_body(self, body: bytes) -> None:
        if self.head:
            self.reusable = False  # a body after a HEAD answer: the stream can't be trusted
            return
        self.body.append(body)
        self.buffered += len(body)

    def on_message_complete(self) -> None:
        if not self.headers_done:  # the end of a 1xx: forget it
            self.reason = b""
            self.headers = []
            self.names = set()
            self.framed = False
            return
        if self.head:
            return
        self.complete = True
        if not self.parser.should_keep_alive():
            self.reusable = False

    # --- used by the transport --------------------------------------------------------------

    def _fail(self, error: httpx.TransportError) -> None:
        self.error = error
        self.reusable = False
        self.abort()
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def abort(self) -> None:
        """Close at once, without a graceful shutdown."""
        self.reusable = False
        if self.transport is not None and not self.closed:
            self.transport.abort()

    def take_body(self) -> bytes:
        """Return and forget the body bytes received so far."""
        body = self.body
        if not body:
            return b""
        data = body[0] if len(body) == 1 else b"".join(body)
        body.clear()
        self.buffered = 0
        if self._read_paused and self.transport is not None:
            self._read_paused = False
            self.transport.resume_reading()
        return data

    async def wait(self, limit: float | None, *, reads: bool = True) -> None:
        """Wait for the next event; `limit` seconds without one (or without data), or the exchange's
        deadline, raise `httpx.ReadTimeout` (`httpx.WriteTimeout` when not waiting on `reads`)."""
        waiter = self._waiter = self.loop.create_future()
        delay = _within(limit, self.deadline)
        if delay is None:
            self._wait_due = None
        else:
            due = self._wait_due = self.loop.time() + delay
            self._wait_limit, self._wait_reads = limit, reads
            # One timer per connection, re-armed lazily: most waits end long before it fires, and
            # arming and cancelling a timer for each of them costs more than the wait itself.
            if self._timer is None or self._timer.when() > due:
                self._cancel_timer()
                self._timer = self.loop.call_at(due, self._on_timer)
        try:
            await waiter
        finally:
            self._waiter = None

    def _on_timer(self) -> None:
        self._timer = None
        waiter, due = self._waiter, self._wait_due
        if waiter is None or waiter.done() or due is None:
            return  # no wait with a limit is running: stay disarmed until the next one
        now = self.loop.time()
        limit = self._wait_limit
        if self._wait_reads and self.received and limit is not None:
            due = max(due, self._last_read + limit)  # data arrived meanwhile: the read limit restarts
            if self.deadline is not None:
                due = min(due, now + self.deadline.remaining())
        if due - now > TIMER_SLACK:
            self._timer = self.loop.call_at(due, self._on_timer)
            return
        if self._wait_reads:
            waiter.set_exception(httpx.ReadTimeout("timed out reading the response"))
        else:
            waiter.set_exception(httpx.WriteTimeout("timed out writing the request"))

    async def drain(self, limit: float | None) -> None:
        """Wait until the kernel took our buffered request bytes."""
        while self._write_paused and not self.closed:
            await self.wait(limit, reads=False)


class _ResponseStream(httpx.AsyncByteStream):
    """A response body read from its connection as the consumer asks for it."""

    def __init__(self, pool: FastTransport, conn: _Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn: _Connection | None = conn
        self._read_timeout = read_timeout
        self.response: httpx.Response | None = None
        self.started = 0.0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        if conn is None:
            return
        conn.deadline = None  # the call's deadline covers the answer's head; a streamed body takes its time
        try:
            while True:
                chunk = conn.take_body()
                if chunk:
                    yield chunk
                    continue
                if conn.error is not None:
                    raise conn.error
                if conn.complete:
                    break
                await conn.wait(self._read_timeout)
        except BaseException:
            self._finish(reuse=False)
            raise
        self._finish(reuse=True)

    def _finish(self, *, reuse: bool) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            self._pool._release(conn, reuse=reuse and conn.complete and not conn.body)
            if self.response is not None:  # what httpx's BoundAsyncStream does on close
                self.response.elapsed = datetime.timedelta(seconds=time.perf_counter() - self.started)

    async def aclose(self) -> None:
        self._finish(reuse=False)


class _Waiter:
    """A request queued for a connection of `key`: gets a connection, or leave to open one."""

    __slots__ = ("future", "key")

    def __init__(self, key: Key, future: asyncio.Future[_Connection | None]) -> None:
        self.key = key
        self.future = future


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio with llhttp (httptools) parsing and a pool it reports exactly.

    Args:
        ssl_context: The TLS context for https:// origins, built once by the caller.
        max_connections: Cap on open connections across all origins.
        max_keepalive_connections: Cap on idle connections kept for reuse.
        keepalive_expiry: Seconds an idle connection is kept.
        max_connections_per_host: Cap per origin; 0 means only the global cap applies.
        max_header_bytes: Largest response header block accepted.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry: float = 5.0,
        max_connections_per_host: int = 0,
        max_header_bytes: int = MAX_HEADER_BYTES,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        self._per_host = max_connections_per_host or max_connections
        self._max_header_bytes = max_header_bytes
        self._idle: dict[Key, list[_Connection]] = {}
        self._idle_count = 0
        self._active: set[_Connection] = set()
        self._connecting: Counter[Key] = Counter()
        self._by_host: Counter[Key] = Counter()
        self._total = 0
        self._waiters: deque[_Waiter] = deque()
        self._origins: dict[Key, str] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self._read_buffer = memoryview(bytearray(READ_BUFFER_SIZE))

    # --- the pool -----------------------------------------------------------------------------

    def pool_state(self) -> PoolState:
        """The live pool: every connection with its origin and state, and queued requests."""
        conns = [ConnectionSnapshot(self._origin(c.key), "active", "HTTP/1.1") for c in self._active]
        for key, idle in self._idle.items():
            conns.extend(ConnectionSnapshot(self._origin(key), "idle", "HTTP/1.1") for _ in idle)
        for key, count in self._connecting.items():
            conns.extend(
                ConnectionSnapshot(self._origin(key), "connecting", "HTTP/1.1") for _ in range(count)
            )
        queued: Counter[str] = Counter()
        for waiter in self._waiters:
            if not waiter.future.done():
                queued[self._origin(waiter.key)] += 1
        return PoolState(tuple(conns), dict(queued))

    def _origin(self, key: Key) -> str:
        text = self._origins.get(key)
        if text is None:
            text = self._origins[key] = f"{key[0].decode()}://{key[1].decode()}:{key[2]}"
        return text

    def _take_idle(self, key: Key) -> _Connection | None:
        idle = self._idle.get(key)
        if not idle:
            return None
        now = time.monotonic()
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.closed or now - conn.idle_since > self._keepalive_expiry:
                self._forget(conn)
                conn.abort()
                continue
            conn.in_use = True
            self._active.add(conn)
            return conn
        return None

    def _reserve(self, key: Key) -> bool:
        """Take a slot to open a connection to `key`, evicting another origin's idle one if needed."""
        if self._by_host[key] >= self._per_host:
            return False
        if self._total >= self._max_connections and not self._evict_idle():
            return False
        self._total += 1
        self._by_host[key] += 1
        self._connecting[key] += 1
        return True

    def _evict_idle(self) -> bool:
        for idle in self._idle.values():
            if idle:
                conn = idle.pop(0)  # the least recently used
                self._idle_count -= 1
                self._forget(conn)
                conn.abort()
                return True
        return False

    def _unreserve(self, key: Key) -> None:
        self._connecting[key] -= 1
        if not self._connecting[key]:
            del self._connecting[key]
        self._total -= 1
        self._by_host[key] -= 1
        self._wake_waiters()

    def _forget(self, conn: _Connection) -> None:
        self._total -= 1
        self._by_host[conn.key] -= 1
        if not self._by_host[conn.key]:
            del self._by_host[conn.key]

    def _drop_idle(self, conn: _Connection) -> None:
        """An idle connection closed under us (the server hung up): forget it now."""
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            self._idle_count -= 1
            self._forget(conn)
            self._wake_waiters()

    def _release(self, conn: _Connection, *, reuse: bool) -> None:
        """Return a connection after its exchange: to a waiter, to the idle list, or closed."""
        self._active.discard(conn)
        conn.in_use = False
        if reuse and conn.reusable and not conn.closed and not self._closed:
            for waiter in self._waiters:
                if waiter.key == conn.key and not waiter.future.done():
                    self._waiters.remove(waiter)
                    conn.in_use = True
                    self._active.add(conn)
                    waiter.future.set_result(conn)
                    return
            if self._idle_count < self._max_keepalive and self._keepalive_expiry > 0:
                conn.idle_since = time.monotonic()
                self._idle.setdefault(conn.key, []).append(conn)
                self._idle_count += 1
                self._schedule_sweep()
                self._wake_waiters()
                return
        self._forget(conn)
        conn.abort()
        self._wake_waiters()

    def _wake_waiters(self) -> None:
        """Let queued requests proceed while slots or idle connections allow."""
        if not self._waiters:
            return
        for waiter in list(self._waiters):
            if waiter.future.done():
                self._waiters.remove(waiter)
                continue
            conn = self._take_idle(waiter.key)
            if conn is not None:
                self._waiters.remove(waiter)
                waiter.future.set_result(conn)
            elif self._reserve(waiter.key):
                self._waiters.remove(waiter)
                waiter.future.set_result(None)
            elif self._total >= self._max_connections and not self._idle_count:
                return

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self._keepalive_expiry + 0.05, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections past their keep-alive expiry."""
        self._sweeper = None
        now = time.monotonic()
        for idle in self._idle.values():
            for conn in [c for c in idle if now - c.idle_since > self._keepalive_expiry]:
                idle.remove(conn)
                self._idle_count -= 1
                self._forget(conn)
                if conn.transport is not None and not conn.closed:
                    conn.transport.close()
        if self._idle_count:
            self._schedule_sweep()
        self._wake_waiters()

    async def _acquire(self, key: Key, limit: float | None, *, fresh: bool) -> _Connection | None:
        """An idle connection, or None with a reserved slot to open one; waits up to `limit` seconds."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        if not fresh and not self._waiters:
            conn = self._take_idle(key)
            if conn is not None:
                return conn
        if not self._waiters and self._reserve(key):
            return None
        loop = asyncio.get_running_loop()
        waiter = _Waiter(key, loop.create_future())
        self._waiters.append(waiter)
        self._wake_waiters()
        timer = None if limit is None else loop.call_later(limit, _expire, waiter.future)
        try:
            return await waiter.future
        except BaseException:
            future = waiter.future
            if future.done() and not future.cancelled() and future.exception() is None:
                granted = future.result()  # handed over just as we were cancelled: give it back
                if granted is None:
                    self._unreserve(key)
                else:
                    self._release(granted, reuse=True)
            if waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            if timer is not None:
                timer.cancel()

    async def _connect(self, key: Key, limit: float | None) -> _Connection:
        scheme, host, port = key
        use_tls = scheme == b"https"
        loop = asyncio.get_running_loop()
        hostname = host.decode("ascii")
        context = self._ssl_context if use_tls else None
        if use_tls and context is None:
            context = self._ssl_context = ssl.create_default_context()
        if context is not None:
            # httpcore sets ALPN on a context it shares; this pool only speaks HTTP/1.1.
            context.set_alpn_protocols(["http/1.1"])
        try:
            async with asyncio.timeout(limit):
                _, conn = await loop.create_connection(
                    lambda: _Connection(self, key, self._max_header_bytes),
                    hostname,
                    port,
                    ssl=context,
                    server_hostname=hostname if use_tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {self._origin(key)}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"could not connect to {self._origin(key)}: {exc}") from None
        if use_tls and conn.transport is not None:
            ssl_object = conn.transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() not in (None, "http/1.1"):
                conn.abort()
                raise httpx.ConnectError(f"{self._origin(key)} negotiated a protocol other than HTTP/1.1")
        return conn

    # --- one exchange -------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return a response whose body streams from the connection."""
        started = time.perf_counter()
        conn, timeouts = await self._exchange(request)
        stream = _ResponseStream(self, conn, timeouts.get("read"))
        stream.started = started
        stream.response = response = self._response(conn, request, stream)
        return response

    async def fetch(self, request: httpx.Request, max_bytes: int | None = None) -> httpx.Response:
        """Send `request` and return its response with the body read (the service's fast path).

        A body declared or received past `max_bytes` (raw, then decoded) raises `ResponseTooLargeError`.
        """
        started = time.perf_counter()
        conn, timeouts = await self._exchange(request)
        chunks: list[bytes] = []
        taken = 0
        try:
            if max_bytes is not None and conn.declared > max_bytes:
                raise too_large(request, max_bytes)
            read_timeout = timeouts.get("read")
            while not conn.complete:
                if conn.error is not None:
                    raise conn.error
                await conn.wait(read_timeout)
                if max_bytes is not None and taken + conn.buffered > max_bytes:
                    raise too_large(request, max_bytes)
                if conn.buffered > READ_HIGH_WATER:
                    taken += conn.buffered
                    chunks.append(conn.take_body())  # also resumes a socket paused at the high-water mark
            if conn.error is not None:
                raise conn.error
        except BaseException as exc:
            self._release(conn, reuse=False)
            if isinstance(exc, httpx.TimeoutException):
                _raise_if_past_deadline(request)
            if isinstance(exc, httpx.RequestError):
                exc.request = request
            raise
        body = conn.take_body()
        if chunks:
            body = b"".join([*chunks, body])
        encoded = b"content-encoding" in conn.names
        response = self._response(conn, request, httpx.ByteStream(body))
        self._release(conn, reuse=True)
        if encoded:
            read_decoded(response, max_bytes)
        else:
            # What Response.read() ends with for an identity body, without its four generators.
            response._content = body
            response.is_stream_consumed = True
            response.is_closed = True
        response.elapsed = datetime.timedelta(seconds=time.perf_counter() - started)
        return response

    def _response(self, conn: _Connection, request: httpx.Request, stream: Any) -> httpx.Response:
        extensions = {
            "http_version": self._version(conn),
            "reason_phrase": conn.reason,
            HEADER_NAMES: conn.names,
        }
        response = httpx.Response(conn.status, stream=stream, request=request, extensions=extensions)
        response.headers._list = conn.headers  # parsed in httpx's layout already
        return response

    @staticmethod
    def _version(conn: _Connection) -> bytes:
        return b"HTTP/1.0" if conn.parser.get_http_version() == "1.0" else b"HTTP/1.1"

    async def _exchange(self, request: httpx.Request) -> tuple[_Connection, dict[str, float | None]]:
        url = request.url
        scheme = url.raw_scheme
        if scheme not in DEFAULT_PORTS:
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme.decode()!r}", request=request)
        key = (scheme, url.raw_host, url.port or DEFAULT_PORTS[scheme])
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        stream = request.stream
        replayable = isinstance(stream, httpx.ByteStream)
        head = _request_head(request)
        body = b"".join(stream) if isinstance(stream, httpx.ByteStream) else None
        fresh = False
        while True:
            # An idle connection is taken without a coroutine; anything else may have to wait.
            conn = None if fresh or self._waiters or self._closed else self._take_idle(key)
            if conn is None:
                conn = await self._checkout(key, request, timeouts, fresh=fresh)
            reused = conn.requests > 0
            try:
                await self._send(conn, request, head, body, timeouts)
                return conn, timeouts
            except _StaleConnectionError as stale:
                self._release(conn, reuse=False)
                safe = replayable and (request.method in IDEMPOTENT_METHODS or not stale.sent)
                if not (reused and safe and not fresh):
                    stale.error.request = request
                    raise stale.error from None
                fresh = True
            except httpx.TransportError as exc:
                self._release(conn, reuse=False)
                if isinstance(exc, httpx.TimeoutException):
                    _raise_if_past_deadline(request)
                exc.request = request
                raise
            except BaseException:
                self._release(conn, reuse=False)
                raise

    async def _checkout(
        self, key: Key, request: httpx.Request, timeouts: dict[str, float | None], *, fresh: bool
    ) -> _Connection:
        """An idle connection of `key`, or a new one, within the pool and connect timeouts."""
        deadline: Deadline | None = request.extensions.get(DEADLINE)
        try:
            conn = await self._acquire(key, _within(timeouts.get("pool"), deadline), fresh=fresh)
        except _PoolTimedOut:
            _raise_if_past_deadline(request)
            raise httpx.PoolTimeout("timed out waiting for a connection", request=request) from None
        if conn is not None:
            return conn
        try:
            conn = await self._connect(key, _within(timeouts.get("connect"), deadline))
        except BaseException as exc:
            self._unreserve(key)
            if isinstance(exc, httpx.TimeoutException):
                _raise_if_past_deadline(request)
            raise
        self._connecting[key] -= 1
        if not self._connecting[key]:
            del self._connecting[key]
        if self._closed:
            self._forget(conn)
            conn.abort()
            raise RuntimeError("the transport is closed")
        conn.in_use = True
        self._active.add(conn)
        return conn

    async def _send(
        self,
        conn: _Connection,
        request: httpx.Request,
        head: bytes,
        body: bytes | None,
        timeouts: dict[str, float | None],
    ) -> None:
        """Write the request and wait for the response head; raise `_StaleConnectionError` if it died."""
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            error = httpx.RemoteProtocolError("connection closed before the request")
            raise _StaleConnectionError(error, sent=False)
        conn.requests += 1
        conn._begin_exchange(request.method == "HEAD")
        conn.deadline = request.extensions.get(DEADLINE)
        write_timeout = timeouts.get("write")
        if body is not None:
            transport.write(head + body if len(body) < 65536 else head)
            if len(body) >= 65536:
                transport.write(body)
        else:
            transport.write(head)
            chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
            async for chunk in request.stream:  # type: ignore[union-attr]
                if chunk:
                    transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    await conn.drain(write_timeout)
            if chunked:
                transport.write(b"0\r\n\r\n")
        await conn.drain(write_timeout)
        read_timeout = timeouts.get("read")
        while not conn.headers_done:
            if conn.error is not None:
                if conn.requests > 1 and not conn.received:
                    raise _StaleConnectionError(conn.error, sent=True)
                raise conn.error
            await conn.wait(read_timeout)

    async def aclose(self) -> None:
        """Close every connection and fail queued requests."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for waiter in self._waiters:
            if not waiter.future.done():
                waiter.future.set_exception(RuntimeError("the transport is closed"))
        self._waiters.clear()
        conns = [c for idle in self._idle.values() for c in idle] + list(self._active)
        self._idle.clear()
        self._idle_count = 0
        self._active.clear()
        for conn in conns:
            conn.abort()
        if conns:
            await asyncio.sleep(0)  # let the loop run the connection_lost callbacks


class _PoolTimedOut(Exception):
    """Internal: a queued request waited longer than the pool timeout."""


def _within(limit: float | None, deadline: Deadline | None) -> float | None:
    """`limit` seconds, or fewer when the call's deadline comes first."""
    if deadline is None:
        return limit
    left = deadline.remaining()
    return left if limit is None or left < limit else limit


def _raise_if_past_deadline(request: httpx.Request) -> None:
    """Turn a timeout that came from the call's deadline into `DeadlineExceededError`."""
    deadline: Deadline | None = request.extensions.get(DEADLINE)
    if deadline is not None and deadline.remaining() <= DEADLINE_SLACK:
        raise deadline_exceeded(request, deadline.seconds) from None


async def _bounded(step: Awaitable[T], request: httpx.Request, deadline: Deadline | None) -> T:
    """Await `step` within `deadline`, for the rare steps that don't run through this transport."""
    if deadline is None:
        return await step
    try:
        async with asyncio.timeout(deadline.remaining()):
            return await step
    except TimeoutError:
        raise deadline_exceeded(request, deadline.seconds) from None


def _expire(future: asyncio.Future[Any]) -> None:
    if not future.done():
        future.set_exception(_PoolTimedOut())


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


def _request_head(request: httpx.Request) -> bytes:
    """The request line and headers, serialized as HTTP/1.1 (RFC 9112 §3)."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, _, value in request.headers._list:
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)


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
    """Whether the client adds nothing a request would need its generic machinery for."""
    hooks = client.event_hooks
    return (
        client.auth is None
        and not client.cookies
        and not client.params
        and not hooks["request"]
        and not hooks["response"]
        and not client.is_closed
    )


def build_request_fast(
    client: httpx.AsyncClient, method: str, url: httpx.URL | str, options: dict[str, Any]
) -> httpx.Request | None:
    """`client.build_request` for a plain client and simple options; None when it must go the long way."""
    if not options.keys() <= _FAST_BUILD_OPTIONS or not _plain_client(client):
        return None
    absolute = _parse_absolute(url)
    if absolute is None:
        return None
    parsed, netloc = absolute
    timeout = options.get("timeout", httpx.USE_CLIENT_DEFAULT)
    if isinstance(timeout, httpx._client.UseClientDefault):
        timeout = client.timeout
    if not isinstance(timeout, httpx.Timeout):
        timeout = httpx.Timeout(timeout)
    extensions = {"timeout": timeout.as_dict()}
    params = options.get("params")
    extra = options.get("headers")
    content, json = options.get("content"), options.get("json")
    body = content is not None or json is not None or method in ("POST", "PUT", "PATCH")
    defaults = client.headers._list
    if extra or body or params is not None or _has_host(defaults):
        headers = client.headers
        if extra:
            headers = httpx.Headers(headers)
            headers.update(extra)
        return httpx.Request(
            method, parsed, params=params, headers=headers, json=json, content=content, extensions=extensions
        )
    # A body-less request with the client's headers: what Request.__init__ and _prepare would
    # produce (Host first), built without re-parsing the URL or re-normalizing headers.
    headers = httpx.Headers.__new__(httpx.Headers)
    headers._list = [(b"Host", b"host", netloc), *defaults]
    headers._encoding = None
    request = httpx.Request.__new__(httpx.Request)
    request.method = method.upper()
    request.url = parsed
    request.headers = headers
    request.extensions = extensions
    request.stream = _EMPTY
    request._content = b""  # what request.read() leaves for an empty body
    return request


def _has_host(headers: list[tuple[bytes, bytes, bytes]]) -> bool:
    for _, lowered, _ in headers:  # noqa: SIM110 - a plain loop: any() and its generator cost more
        if lowered == b"host":
            return True
    return False


def fast_transport_for(
    client: httpx.AsyncClient, request: httpx.Request, send_options: dict[str, Any]
) -> FastTransport | None:
    """The FastTransport that would carry `request`, if the fast path may send it directly."""
    auth = send_options.get("auth", httpx.USE_CLIENT_DEFAULT)
    if auth is not None and not isinstance(auth, httpx._client.UseClientDefault):
        return None
    # What client.send adds besides redirects and cookies (which send_fast does too): auth flows,
    # including Basic auth from the URL's userinfo, and event hooks. Cookies and params were merged
    # into the request when it was built.
    hooks = client.event_hooks
    if client.auth is not None or hooks["request"] or hooks["response"] or request.url.userinfo:
        return None
    transport = client._transport_for_url(request.url)  # honours mounts, proxies and respx
    return transport if isinstance(transport, FastTransport) else None


async def send_fast(
    client: httpx.AsyncClient,
    transport: FastTransport,
    request: httpx.Request,
    send_options: dict[str, Any],
    *,
    stream: bool,
    max_bytes: int | None = None,
    deadline: Deadline | None = None,
) -> httpx.Response:
    """Send like `client.send` (redirects, history, cookies, timeouts) straight through `transport`.

    Bodies past `max_bytes` raise `ResponseTooLargeError`: declared ones at once, read ones as they come.
    Every wait, over every hop, ends by `deadline` with `DeadlineExceededError` (a streamed final body
    excepted).
    """
    follow = send_options.get("follow_redirects", httpx.USE_CLIENT_DEFAULT)
    if isinstance(follow, httpx._client.UseClientDefault):
        follow = client.follow_redirects
    if "timeout" not in request.extensions:
        request.extensions = {**request.extensions, "timeout": client.timeout.as_dict()}
    if deadline is not None:
        request.extensions = {**request.extensions, DEADLINE: deadline}  # redirects carry extensions on
    history: list[httpx.Response] = []
    while True:
        if len(history) > client.max_redirects:
            raise httpx.TooManyRedirects("Exceeded maximum allowed redirects.", request=request)
        if stream:
            response = await transport.handle_async_request(request)
            await refuse_declared_size(response, max_bytes)
        else:
            response = await transport.fetch(request, max_bytes)
        try:
            if b"set-cookie" in header_names(response):
                client.cookies.extract_cookies(response)
            if history:
                response.history = list(history)
            if not response.has_redirect_location:
                return response
            next_request = client._build_redirect_request(request, response)
            history = [*history, response]
            if not follow:
                response.next_request = next_request
                return response
            if stream:
                await _bounded(read_capped(response, max_bytes), request, deadline)
        except BaseException:
            await response.aclose()
            raise
        request = next_request
        next_transport = client._transport_for_url(request.url)
        if not isinstance(next_transport, FastTransport):
            # A hop onto a mount (proxy, HTTP/2): let httpx carry on from here, history intact.
            hop = client._send_handling_redirects(request, follow_redirects=True, history=history)
            response = await _bounded(hop, request, deadline)
            await refuse_declared_size(response, max_bytes)
            if not stream:
                await _bounded(read_capped(response, max_bytes), request, deadline)
            return response
        transport = next_transport


def transport_mode(settings: HTTPSettings) -> str:
    """What HTTP_TRANSPORT resolves to: fast, httpcore, or mixed (https:// on httpcore for HTTP/2)."""
    if settings.transport == "auto":
        return "mixed" if settings.http2 else "fast"
    return settings.transport


def transport_options(settings: HTTPSettings, ssl_context: ssl.SSLContext) -> dict[str, Any]:
    """The `transport=`/`mounts=` keywords for the shared `httpx.AsyncClient` under `settings`.

    Proxies from the environment go through httpx's own (httpcore) proxy transports, as without us.
    """
    mode = transport_mode(settings)
    if mode == "httpcore":
        return {}
    fast = FastTransport(
        ssl_context=ssl_context,
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry,
        max_connections_per_host=settings.max_connections_per_host,
    )
    limits = httpx.Limits(
        max_connections=settings.max_connections,
        max_keepalive_connections=settings.max_keepalive_connections,
        keepalive_expiry=settings.keepalive_expiry,
    )
    mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
    # httpx drops environment proxies once given a transport=, so mount them as it would have.
    proxies = get_environment_proxies() if settings.trust_env else {}
    if any(proxies.values()):
        for pattern, proxy in proxies.items():
            mounts[pattern] = (
                None
                if proxy is None
                else httpx.AsyncHTTPTransport(
                    proxy=proxy, verify=ssl_context, http2=settings.http2, limits=limits
                )
            )
    if mode == "mixed" and "https://" not in mounts and "all://" not in mounts:
        # Only httpcore speaks HTTP/2.
        mounts["https://"] = httpx.AsyncHTTPTransport(verify=ssl_context, http2=True, limits=limits)
    return {"transport": fast, "mounts": mounts}
