"""One HTTP/1.1 connection as an asyncio protocol: request serialization and llhttp response parsing.

Why httptools and not aiohttp's connector: llhttp (the parser Node.js and uvicorn use) is a C parser
behind a callback API that costs a few microseconds per response, and an asyncio protocol of our own
lets the pool be exact and the responses be plain `httpx.Response` objects, their headers parsed
straight into httpx's layout. With the sockets taken out (benchmarks/no_io.py, concurrency 10),
`FastTransport.fetch` costs 17 us of client CPU per small GET, Courier's whole service 37 us and a
shared aiohttp session 45 us; against nginx, stock httpx costs about 580 us (benchmarks/http_bench.py).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httptools
import httpx

from services.resilience.retry import Deadline
from services.transport.deadline import within
from services.transport.httpx_glue import header_list

if TYPE_CHECKING:
    from services.transport.pool import FastTransport

# h11 (httpcore) refuses header blocks over 100 KiB; llhttp has no limit of its own.
MAX_HEADER_BYTES = 64 * 1024
# Above this much unread body the socket stops being read until the consumer catches up.
READ_HIGH_WATER = 256 * 1024
# A timer firing this close to when a wait is due ends the wait instead of re-arming.
TIMER_SLACK = 0.001

Key = tuple[bytes, bytes, int]


class StaleConnectionError(Exception):
    """A kept-alive connection died before answering; the request may go again on a new one."""

    def __init__(self, error: httpx.TransportError, *, sent: bool) -> None:
        super().__init__(str(error))
        self.error = error
        self.sent = sent


class HTTP11Connection(asyncio.BufferedProtocol):
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
        return self.pool.read_buffer

    def buffer_updated(self, nbytes: int) -> None:
        self.data_received(self.pool.read_buffer[:nbytes])

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
            self.pool.drop_idle(self)
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
        delay = within(limit, self.deadline)
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


def request_head(request: httpx.Request) -> bytes:
    """The request line and headers, serialized as HTTP/1.1 (RFC 9112 §3)."""
    parts = [request.method.encode("ascii"), b" ", request.url.raw_path, b" HTTP/1.1\r\n"]
    for name, _, value in header_list(request.headers):
        parts += (name, b": ", value, b"\r\n")
    parts.append(b"\r\n")
    return b"".join(parts)
