"""The pool: checkout, release, keep-alive expiry and an exact snapshot, as an httpx transport (HTTP/1.1
connections here; HTTP/2 ones, one per origin carrying many streams, through `HTTP2Pool`)."""

from __future__ import annotations

import asyncio
import datetime
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
from loguru import logger

from services.errors import host_busy, too_large
from services.headers import HEADER_NAMES
from services.resilience.retry import IDEMPOTENT_METHODS, Deadline
from services.stats import ConnectionSnapshot, PoolState
from services.transport.deadline import DEADLINE, raise_if_past_deadline, within
from services.transport.http2 import H2Connection, HTTP2Pool
from services.transport.http11 import (
    MAX_HEADER_BYTES,
    READ_HIGH_WATER,
    HTTP11Connection,
    Key,
    StaleConnectionError,
    request_head,
)
from services.transport.httpx_glue import (
    build_read_response,
    build_response,
    byte_stream_content,
    read_decoded,
)
from services.transport.scheduler import GRANTED, SlotScheduler, Ticket, default_share

# Bytes taken from a socket per read, into one buffer the pool's connections share.
READ_BUFFER_SIZE = 256 * 1024
DEFAULT_PORTS = {b"http": 80, b"https": 443}
# `extensions["http_version"]` for the status line's version, as llhttp reports it.
HTTP_VERSIONS = {"1.1": b"HTTP/1.1", "1.0": b"HTTP/1.0"}
# Response extension holding a chunked body's trailer fields (an `httpx.Headers`), when it had any:
# trailers are not headers (RFC 9110 §6.5), so they never reach `response.headers`.
TRAILERS = "courier.trailers"
# The share of a call's remaining deadline it may spend queued for a connection: past it the request
# fails with HostBusyError, leaving the rest of the deadline for a reply that says so.
QUEUE_SHARE = 0.1
# Seconds between two warnings that an origin's requests are being shed.
SHED_LOG_INTERVAL = 10.0
# Requests one origin may have queued by default (or HTTP_MAX_CONNECTIONS, if larger).
MIN_QUEUE = 100
# URLs whose origin key and request target are kept, by identity, and how many at most.
TARGET_CACHE_SIZE = 256
_targets: dict[int, tuple[httpx.URL, Key, bytes]] = {}


class _ResponseStream(httpx.AsyncByteStream):
    """A response body read from its connection as the consumer asks for it."""

    def __init__(self, pool: FastTransport, conn: HTTP11Connection, read_timeout: float | None) -> None:
        self._pool = pool
        self._conn: HTTP11Connection | None = conn
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
                if conn.trailers is not None and conn.complete:
                    self.response.extensions[TRAILERS] = httpx.Headers(conn.trailers)

    async def aclose(self) -> None:
        self._finish(reuse=False)


class _ALPNChoice(asyncio.Protocol):
    """Becomes an HTTP/2 or an HTTP/1.1 connection the moment TLS says which protocol the server chose."""

    def __init__(self, pool: FastTransport, h2: HTTP2Pool, key: Key) -> None:
        self.pool = pool
        self.h2 = h2
        self.key = key
        self.chosen: HTTP11Connection | H2Connection | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Runs once the handshake is done and before any later byte is read: nothing is lost by
        # switching protocols here (the server's SETTINGS may be in the very next read).
        ssl_object = transport.get_extra_info("ssl_object")
        chosen = ssl_object.selected_alpn_protocol() if ssl_object is not None else None
        header_bytes = self.pool._max_header_bytes
        conn: HTTP11Connection | H2Connection
        if chosen == "h2":
            conn = H2Connection(self.h2, self.key, header_bytes)
        else:
            conn = HTTP11Connection(self.pool, self.key, header_bytes)
        self.chosen = conn
        transport.set_protocol(conn)
        conn.connection_made(transport)


class FastTransport(httpx.AsyncBaseTransport):
    """HTTP/1.1 over asyncio with llhttp (httptools) parsing and a pool it reports exactly.

    Args:
        ssl_context: The TLS context for https:// origins, built once by the caller.
        http2_ssl_context: A second context for the connections that offer HTTP/2, so that the ALPN
            list each offers is fixed on its own context rather than set on a shared one before
            each dial (concurrent dials, or httpcore on the same context, could swap it in between).
        max_connections: Cap on open connections across all origins.
        max_keepalive_connections: Cap on idle connections kept for reuse.
        keepalive_expiry: Seconds an idle connection is kept.
        max_connections_per_host: Slots (connections in use) one origin may hold; 0 means half the pool,
            so one slow host leaves the other half to the rest.
        max_queued_per_host: Requests one origin may have waiting; more are shed at once; 0 means
            `max_connections` or 100, whichever is larger.
        adaptive: Lower an origin's limit while its latency climbs (Gradient2), and raise it back.
        max_header_bytes: Largest response header block accepted.
        http2: Offer HTTP/2 by ALPN to https:// origins; one connection per origin carries many streams,
            each holding one of the origin's slots as an HTTP/1.1 exchange does.
        http2_prior_knowledge: Speak HTTP/2 without TLS (h2c) to http:// origins.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        http2_ssl_context: ssl.SSLContext | None = None,
        max_connections: int = 100,
        max_keepalive_connections: int = 20,
        keepalive_expiry: float = 5.0,
        max_connections_per_host: int = 0,
        max_queued_per_host: int = 0,
        adaptive: bool = True,
        max_header_bytes: int = MAX_HEADER_BYTES,
        http2: bool = False,
        http2_prior_knowledge: bool = False,
    ) -> None:
        self._ssl_context = ssl_context
        self._h2_ssl_context = http2_ssl_context
        if http2_ssl_context is not None:
            http2_ssl_context.set_alpn_protocols(["h2", "http/1.1"])
        self._max_connections = max_connections
        self._max_keepalive = max_keepalive_connections
        self._keepalive_expiry = keepalive_expiry
        self._max_header_bytes = max_header_bytes
        # Only origins with idle connections are keys here, so the first one found can be evicted.
        self._idle: dict[Key, list[HTTP11Connection]] = {}
        self._idle_count = 0
        self._active: set[HTTP11Connection] = set()
        self._connecting: Counter[Key] = Counter()
        self._total = 0  # open connections, connecting ones included
        self._slots: SlotScheduler[Key, asyncio.Future[None]] = SlotScheduler(
            max_connections,
            max_connections_per_host or default_share(max_connections),
            max_queued_per_host or max(MIN_QUEUE, max_connections),
            _grant,
            adaptive=adaptive,
        )
        self._origins: dict[Key, str] = {}
        self._shed_logged: dict[Key, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False
        self.read_buffer = memoryview(bytearray(READ_BUFFER_SIZE))
        self._h2: HTTP2Pool | None = None
        if http2 or http2_prior_knowledge:
            self._h2 = HTTP2Pool(self, tls=http2, cleartext=http2_prior_knowledge)

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
        slots = {self._origin(key): counts for key, counts in self._slots.snapshot().items()}
        queued = {origin: counts.queued for origin, counts in slots.items() if counts.queued}
        if self._h2 is not None:
            conns.extend(self._h2.snapshots())
            for key, count in self._h2.waiting.items():  # holding a slot, waiting for a stream
                queued[self._origin(key)] = queued.get(self._origin(key), 0) + count
        return PoolState(tuple(conns), queued, slots)

    def _origin(self, key: Key) -> str:
        text = self._origins.get(key)
        if text is None:
            if len(self._origins) >= 1024:
                self._origins.clear()  # names only, rebuilt on demand: any host may be looked up
            text = self._origins[key] = f"{key[0].decode()}://{key[1].decode()}:{key[2]}"
        return text

    def _take_idle(self, key: Key) -> HTTP11Connection | None:
        """An idle connection of `key` for a request that holds a slot, or None."""
        idle = self._idle.get(key)
        if idle is None:
            return None
        now = time.monotonic()
        conn = None
        while idle:
            candidate = idle.pop()
            self._idle_count -= 1
            if candidate.closed or now - candidate.idle_since > self._keepalive_expiry:
                self._total -= 1
                candidate.abort()
                continue
            conn = candidate
            break
        if not idle:
            del self._idle[key]
        if conn is not None:
            conn.in_use = True
            self._active.add(conn)
        return conn

    def _take_idle_now(self, key: Key) -> HTTP11Connection | None:
        """A slot and an idle connection of `key` without a coroutine, when no one is queued ahead."""
        if key not in self._idle or self._closed or not self._slots.try_acquire(key):
            return None
        conn = self._take_idle(key)
        if conn is None:
            self._slots.release(key)
        else:
            conn.checked_out = conn.loop.time()
        return conn

    def _reserve(self, key: Key) -> None:
        """Count a connection being opened to `key` by a request holding a slot.

        A full pool has an idle connection to close for it: slots never outnumber connections allowed.
        """
        if self._total >= self._max_connections:
            self._evict_idle()
        self._total += 1
        self._connecting[key] += 1

    def _evict_idle(self) -> None:
        """Close the least recently used idle connection of the first origin that has one."""
        for key, idle in self._idle.items():
            conn = idle.pop(0)
            if not idle:
                del self._idle[key]
            self._idle_count -= 1
            self._total -= 1
            conn.abort()
            return

    def _unreserve(self, key: Key) -> None:
        """A connection to `key` could not be opened: free its place and its request's slot."""
        self._connected(key)
        self._total -= 1
        self._slots.release(key)

    def _connected(self, key: Key) -> None:
        """A connection reserved for `key` is open (or given up): it no longer counts as connecting."""
        self._connecting[key] -= 1
        if not self._connecting[key]:
            del self._connecting[key]

    def _park(self, conn: HTTP11Connection) -> None:
        """A new connection nobody holds yet (opened for HTTP/2, answered in HTTP/1.1): to the idle list."""
        conn.idle_since = time.monotonic()
        self._idle.setdefault(conn.key, []).append(conn)
        self._idle_count += 1
        self._schedule_sweep()

    def drop_idle(self, conn: HTTP11Connection) -> None:
        """An idle connection closed under us (the server hung up): forget it now."""
        idle = self._idle.get(conn.key)
        if idle is not None and conn in idle:
            idle.remove(conn)
            if not idle:
                del self._idle[conn.key]
            self._idle_count -= 1
            self._total -= 1

    def _release(self, conn: HTTP11Connection, *, reuse: bool, learn: bool = True) -> None:
        """Return a connection after its exchange to the idle list (or close it), and free its slot.

        The slot goes to the oldest queued request whose origin is under its limit, whatever origin
        this connection belongs to; `learn` feeds the exchange's duration to the origin's limit.
        """
        self._active.discard(conn)
        conn.in_use = False
        if (
            reuse
            and conn.reusable
            and not conn.closed
            and not self._closed
            and self._idle_count < self._max_keepalive
            and self._keepalive_expiry > 0
        ):
            conn.idle_since = time.monotonic()
            idle = self._idle.get(conn.key)
            if idle is None:
                self._idle[conn.key] = [conn]
            else:
                idle.append(conn)
            self._idle_count += 1
            if self._sweeper is None:
                self._schedule_sweep()
        else:
            self._total -= 1
            conn.abort()
        if learn:
            # Until the last byte came (or until now, if none did): how long the origin made us wait.
            end = conn._last_read if conn.received else conn.loop.time()
            self._slots.release(conn.key, end - conn.checked_out)
        else:
            self._slots.release(conn.key)

    def _schedule_sweep(self) -> None:
        if self._sweeper is None:
            loop = asyncio.get_running_loop()
            self._sweeper = loop.call_later(self._keepalive_expiry + 0.05, self._sweep)

    def _sweep(self) -> None:
        """Close idle connections past their keep-alive expiry."""
        self._sweeper = None
        now = time.monotonic()
        for key, idle in list(self._idle.items()):
            for conn in [c for c in idle if now - c.idle_since > self._keepalive_expiry]:
                idle.remove(conn)
                self._idle_count -= 1
                self._total -= 1
                if conn.transport is not None and not conn.closed:
                    conn.transport.close()
            if not idle:
                del self._idle[key]
        h2_left = self._h2 is not None and self._h2.sweep(now, self._keepalive_expiry)
        if self._idle_count or h2_left:
            self._schedule_sweep()

    async def _queue(self, key: Key, request: httpx.Request, timeouts: dict[str, float | None]) -> None:
        """Wait for a slot of `key` behind older requests, or fail with `HostBusyError`.

        The wait is bounded by the pool timeout and by QUEUE_SHARE of the call's remaining deadline;
        a request whose wait is already known to be longer (its origin's queue is full, or would not
        clear in time at the origin's recent pace) is shed at once.
        """
        deadline: Deadline | None = request.extensions.get(DEADLINE)
        budget = timeouts.get("pool")
        if deadline is not None:
            budget = within(budget, deadline)
            share = deadline.remaining() * QUEUE_SHARE
            budget = share if budget is None or share < budget else budget
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        ticket = self._slots.enqueue(key, future, budget)
        if ticket is None:
            self._note_shed(key, loop.time())
            raise host_busy(request, None)
        timer = None if budget is None else loop.call_at(loop.time() + budget, self._expire, ticket)
        try:
            await future
        except BaseException as exc:
            self._give_back(ticket, key)
            if isinstance(exc, _PoolTimedOut):
                raise_if_past_deadline(request)
                raise host_busy(request, budget) from None
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def _note_shed(self, key: Key, now: float) -> None:
        """Warn that `key` is being shed, once per SHED_LOG_INTERVAL: shedding is meant to be cheap."""
        if now - self._shed_logged.get(key, -SHED_LOG_INTERVAL) < SHED_LOG_INTERVAL:
            return
        if len(self._shed_logged) >= 1024:
            self._shed_logged.clear()
        self._shed_logged[key] = now
        counts = self._slots.snapshot_of(key)
        logger.warning(
            "{} is slow: turning requests away at once ({} in flight, limit {}, {} queued, {} shed so far)",
            self._origin(key),
            counts.in_flight,
            counts.limit,
            counts.queued,
            counts.shed,
        )

    def _expire(self, ticket: Ticket[Key, asyncio.Future[None]]) -> None:
        """A queued request's budget ran out: out of the queue at once, so no slot is granted to it."""
        if not ticket.payload.done():
            self._slots.cancel(ticket)
            ticket.payload.set_exception(_PoolTimedOut())

    def _give_back(self, ticket: Ticket[Key, asyncio.Future[None]], key: Key) -> None:
        """A queued request gave up: leave the queue, or return the slot granted as it left."""
        if ticket.state == GRANTED:
            self._slots.release(key)
        else:
            self._slots.cancel(ticket)

    async def _connect(self, key: Key, limit: float | None) -> HTTP11Connection:
        conn = await self._dial(key, limit, http2=False)
        assert isinstance(conn, HTTP11Connection)
        return conn

    async def _dial(self, key: Key, limit: float | None, *, http2: bool) -> HTTP11Connection | H2Connection:
        """A new connection to `key`; with `http2`, HTTP/2 when ALPN (or prior knowledge) says so."""
        scheme, host, port = key
        use_tls = scheme == b"https"
        loop = asyncio.get_running_loop()
        hostname = host.decode("ascii")
        context: ssl.SSLContext | None = None
        if use_tls and http2 and self._h2_ssl_context is not None:
            context = self._h2_ssl_context
        elif use_tls:
            if self._ssl_context is None:
                self._ssl_context = ssl.create_default_context()
            context = self._ssl_context
            # A context shared with another user (or, without a context of its own for HTTP/2, with
            # our HTTP/2 dials): say what this connection offers each time.
            context.set_alpn_protocols(["h2", "http/1.1"] if http2 else ["http/1.1"])
        factory: Callable[[], asyncio.BaseProtocol]
        if http2 and self._h2 is not None:
            h2 = self._h2
            if use_tls:
                factory = lambda: _ALPNChoice(self, h2, key)  # noqa: E731
            else:
                factory = lambda: H2Connection(h2, key, self._max_header_bytes)  # noqa: E731
        else:
            factory = lambda: HTTP11Connection(self, key, self._max_header_bytes)  # noqa: E731
        try:
            async with asyncio.timeout(limit):
                _, proto = await loop.create_connection(
                    factory,
                    hostname,
                    port,
                    ssl=context,
                    server_hostname=hostname if use_tls else None,
                )
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {self._origin(key)}") from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(f"could not connect to {self._origin(key)}: {exc}") from None
        conn = proto.chosen if isinstance(proto, _ALPNChoice) else proto
        assert isinstance(conn, HTTP11Connection | H2Connection)
        if isinstance(conn, HTTP11Connection) and use_tls and conn.transport is not None:
            ssl_object = conn.transport.get_extra_info("ssl_object")
            if ssl_object is not None and ssl_object.selected_alpn_protocol() not in (None, "http/1.1"):
                conn.abort()
                raise httpx.ConnectError(f"{self._origin(key)} negotiated a protocol other than HTTP/1.1")
        return conn

    # --- one exchange -------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send `request` and return a response whose body streams from the connection."""
        if self._h2 is not None:
            key = self._h2.key_for(request)
            if key is not None:
                h2_response = await self._h2.stream(key, request)
                if h2_response is not None:
                    return h2_response
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
        if self._h2 is not None:
            key = self._h2.key_for(request)
            if key is not None:
                h2_response = await self._h2.fetch(key, request, max_bytes)
                if h2_response is not None:
                    return h2_response
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
                # Woken when the body is complete, past the cap or at the high-water mark, not per read.
                room = READ_HIGH_WATER if max_bytes is None else min(READ_HIGH_WATER, max_bytes - taken)
                conn.wake_above = room
                await conn.wait(read_timeout)
                if max_bytes is not None and taken + conn.buffered > max_bytes:
                    raise too_large(request, max_bytes)
                if conn.buffered > READ_HIGH_WATER:
                    taken += conn.buffered
                    chunks.append(conn.take_body())  # also resumes a socket paused at the high-water mark
            conn.wake_above = None
            if conn.error is not None:
                raise conn.error
        except BaseException as exc:
            conn.wake_above = None
            self._release(conn, reuse=False)
            if isinstance(exc, httpx.TimeoutException):
                raise_if_past_deadline(request)
            if isinstance(exc, httpx.RequestError):
                exc.request = request
            raise
        body = conn.take_body()
        if chunks:
            body = b"".join([*chunks, body])
        if b"content-encoding" in conn.names:
            response = self._response(conn, request, httpx.ByteStream(body))
            self._release(conn, reuse=True)
            read_decoded(response, max_bytes)
        else:
            # Built read, as Response.read() leaves it, without its four generators.
            response = build_read_response(conn.status, conn.headers, body, request, self._extensions(conn))
            self._release(conn, reuse=True)
        response.elapsed = datetime.timedelta(0, time.perf_counter() - started)  # (days, seconds): cheaper
        return response

    def _response(self, conn: HTTP11Connection, request: httpx.Request, stream: Any) -> httpx.Response:
        # In httpx's layout already: nothing re-normalizes the headers.
        return build_response(conn.status, conn.headers, stream, request, self._extensions(conn))

    def _extensions(self, conn: HTTP11Connection) -> dict[str, Any]:
        """The response extensions httpx and the service read (STYLE trap 16: the version)."""
        version = conn.head_version if conn.head else conn.parser.get_http_version()
        known = HTTP_VERSIONS.get(version)
        extensions = {
            "http_version": known if known is not None else b"HTTP/" + version.encode("ascii"),
            "reason_phrase": conn.reason,
            "network_stream": conn.network_stream,
            HEADER_NAMES: conn.names,
        }
        if conn.trailers is not None and conn.complete:
            extensions[TRAILERS] = httpx.Headers(conn.trailers)
        return extensions

    async def _exchange(self, request: httpx.Request) -> tuple[HTTP11Connection, dict[str, float | None]]:
        """Send `request` on a pooled connection and wait for the response head; a kept-alive
        connection found dead is replaced once, when the request may safely go again."""
        key, head, body = _prepare(request)
        timeouts: dict[str, float | None] = request.extensions.get("timeout") or {}
        replayable = body is not None
        fresh = False
        while True:
            # An idle connection is taken without a coroutine; anything else may have to wait.
            conn = None if fresh else self._take_idle_now(key)
            if conn is None:
                conn = await self._checkout(key, request, timeouts, fresh=fresh)
            reused = conn.requests > 0
            try:
                # Written and awaited here, not in a coroutine of its own: a frame less per exchange.
                self._send(conn, request, head, body)
                if body is None:
                    await self._send_stream(conn, request, timeouts.get("write"))
                if conn.write_paused:
                    await conn.drain(timeouts.get("write"))
                read_timeout = timeouts.get("read")
                while not conn.headers_done:
                    if conn.error is not None:
                        if conn.requests > 1 and not conn.received:
                            raise StaleConnectionError(conn.error, sent=True)
                        raise conn.error
                    await conn.wait(read_timeout)
                return conn, timeouts
            except StaleConnectionError as stale:
                self._release(conn, reuse=False, learn=False)
                safe = replayable and (request.method in IDEMPOTENT_METHODS or not stale.sent)
                if not (reused and safe and not fresh):
                    stale.error.request = request
                    raise stale.error from None
                fresh = True
            except httpx.TransportError as exc:
                self._release(conn, reuse=False)
                if isinstance(exc, httpx.TimeoutException):
                    raise_if_past_deadline(request)
                exc.request = request
                raise
            except BaseException:
                self._release(conn, reuse=False)
                raise

    async def _checkout(
        self, key: Key, request: httpx.Request, timeouts: dict[str, float | None], *, fresh: bool
    ) -> HTTP11Connection:
        """A slot, then an idle connection of `key` or a new one, within the pool and connect timeouts."""
        if self._closed:
            raise RuntimeError("the transport is closed")
        if not self._slots.try_acquire(key):
            await self._queue(key, request, timeouts)
        conn = None if fresh else self._take_idle(key)
        if conn is None:
            conn = await self._open(key, request, timeouts)
        conn.checked_out = conn.loop.time()
        return conn

    async def _open(
        self, key: Key, request: httpx.Request, timeouts: dict[str, float | None]
    ) -> HTTP11Connection:
        """Open a connection to `key` for a request that holds a slot."""
        self._reserve(key)
        try:
            conn = await self._connect(key, within(timeouts.get("connect"), request.extensions.get(DEADLINE)))
        except BaseException as exc:
            self._unreserve(key)
            if isinstance(exc, httpx.TimeoutException):
                raise_if_past_deadline(request)
            raise
        self._connected(key)
        if self._closed:
            self._total -= 1
            self._slots.release(key)
            conn.abort()
            raise RuntimeError("the transport is closed")
        conn.in_use = True
        self._active.add(conn)
        return conn

    def _send(self, conn: HTTP11Connection, request: httpx.Request, head: bytes, body: bytes | None) -> None:
        """Start the exchange: write the head (and a body held in memory); raise `StaleConnectionError`
        if the connection died while idle."""
        transport = conn.transport
        if conn.closed or transport is None or transport.is_closing():
            error = httpx.RemoteProtocolError("connection closed before the request")
            raise StaleConnectionError(error, sent=False)
        conn.requests += 1
        conn._begin_exchange(request.method == "HEAD")
        conn.deadline = request.extensions.get(DEADLINE)
        if not body:
            transport.write(head)
        elif len(body) < 65536:
            transport.write(head + body)
        else:
            transport.write(head)
            transport.write(body)

    async def _send_stream(
        self, conn: HTTP11Connection, request: httpx.Request, write_timeout: float | None
    ) -> None:
        """Write a streamed request body, chunked when its headers say so (RFC 9112 §7.1)."""
        transport = conn.transport
        assert transport is not None
        chunked = request.headers.get("transfer-encoding", "").lower() == "chunked"
        async for chunk in request.stream:  # type: ignore[union-attr]
            if chunk:
                transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                await conn.drain(write_timeout)
        if chunked:
            transport.write(b"0\r\n\r\n")

    async def aclose(self) -> None:
        """Close every connection and fail queued requests."""
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for ticket in self._slots.drain():
            if not ticket.payload.done():
                ticket.payload.set_exception(RuntimeError("the transport is closed"))
        h2_open = self._h2 is not None and self._h2.close_all()
        conns = [c for idle in self._idle.values() for c in idle] + list(self._active)
        self._idle.clear()
        self._idle_count = 0
        self._active.clear()
        for conn in conns:
            conn.abort()
        if conns or h2_open:
            await asyncio.sleep(0)  # let the loop run the connection_lost callbacks


def _prepare(request: httpx.Request) -> tuple[Key, bytes, bytes | None]:
    """The origin's key, the serialized head and the body (None for a stream) of `request`."""
    url = request.url
    # A service sends the same few URL objects again and again (httpx_glue keeps them parsed): their
    # origin and target are kept by identity, the entry holding the URL so its id can't be reused.
    known = _targets.get(id(url))
    if known is None or known[0] is not url:
        known = _target(url, request)
    _, key, target = known
    try:
        head = request_head(request, target)
    except httpx.LocalProtocolError as exc:
        exc.request = request
        raise
    stream = request.stream
    if isinstance(stream, httpx.ByteStream):
        body: bytes | None = byte_stream_content(stream)
    elif isinstance(stream, httpx.AsyncByteStream):
        body = None
    else:
        # What httpx.AsyncClient.send says of a sync iterator as content=.
        raise RuntimeError("Attempted to send an sync request with an AsyncClient instance.")
    return key, head, body


def _target(url: httpx.URL, request: httpx.Request) -> tuple[httpx.URL, Key, bytes]:
    """`url`'s origin key and request target (RFC 9112 §3.2.1), kept for the next request to it."""
    scheme = url.raw_scheme
    if scheme not in DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme.decode()!r}", request=request)
    known = (url, (scheme, url.raw_host, url.port or DEFAULT_PORTS[scheme]), url.raw_path)
    if len(_targets) >= TARGET_CACHE_SIZE:
        _targets.clear()
    _targets[id(url)] = known
    return known


class _PoolTimedOut(Exception):
    """Internal: a queued request waited longer than the pool timeout."""


def _grant(ticket: Ticket[Key, asyncio.Future[None]]) -> None:
    """The scheduler gave a queued request its slot: wake it."""
    if not ticket.payload.done():
        ticket.payload.set_result(None)
