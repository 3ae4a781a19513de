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
import re
from typing import TYPE_CHECKING, Any, cast

import httptools
import httpx

from services.resilience.retry import Deadline
from services.transport.deadline import within
from services.transport.httpx_glue import header_list

if TYPE_CHECKING:
    from services.transport.http2 import H2Connection
    from services.transport.pool import FastTransport

# llhttp has no limit of its own. Stock httpx's h11 refuses a head only while it is still incomplete
# and unparsed bytes pass 100 KiB (httpcore's max_incomplete_event_size; h11's default is 16 KiB), so
# a head that completes within a 64 KiB read can be larger. 64 KiB, counted exactly, is ample for
# real servers (nginx's default large_client_header_buffers is 4 x 8 KiB) and bounds memory.
MAX_HEADER_BYTES = 64 * 1024
# Above this much unread body the socket stops being read until the consumer catches up.
READ_HIGH_WATER = 256 * 1024
# A timer firing this close to when a wait is due ends the wait instead of re-arming.
TIMER_SLACK = 0.001

# RFC 9112 §5.2: an obs-fold (a line break followed by whitespace) inside a field value.
OBS_FOLD = re.compile(rb"\r\n[ \t]+")
# llhttp's reason for an obs-fold, which it refuses; the head is then parsed again with folds unfolded.
LLHTTP_OBS_FOLD = "Unexpected whitespace after header value"
# What llhttp's refusals mean, said as what the server did wrong, with why Courier refuses it.
LLHTTP_FAULTS = (
    (
        "Missing expected CR",
        "the server ended a line with a bare LF instead of CRLF (refused, as RFC 9112 §2.2 allows: "
        "parsers that disagree on line ends are how responses get split)",
    ),
    (
        "Duplicate Content-Length",
        "the server sent Content-Length twice (RFC 9112 §6.3: differing values are an unrecoverable "
        "error, and even equal ones are a framing ambiguity Courier doesn't guess through)",
    ),
    (
        "can't be present with",
        "the server sent both Content-Length and Transfer-Encoding (RFC 9112 §6.3: such a message "
        "ought to be handled as an error, as it may be an attempt at response splitting)",
    ),
    (
        "Invalid character in Content-Length",
        "the server sent a Content-Length that is not one decimal number (RFC 9110 §8.6)",
    ),
    (
        "Unexpected space after start line",
        "the server sent whitespace before its first header field (refused, as RFC 9112 §2.2 allows)",
    ),
)
# RFC 9110 §5.1 and §5.5, as h11 applies them to what stock httpx sends: a token, and a field value of
# visible characters (obs-text included) with single spaces or tabs only between them.
TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9a-zA-Z]+")
TOKEN_BYTES = re.compile(TOKEN.pattern.encode("ascii"))
FIELD_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?")
# Request heads kept serialized (method and header block), and how many at most.
HEAD_CACHE_SIZE = 256
_HEADS: dict[tuple[Any, ...], tuple[bytes, bytes]] = {}
# The fields that frame a response body (RFC 9112 §6.3).
FRAMING_FIELDS = frozenset((b"content-length", b"transfer-encoding"))
# httpcore's names for a network stream's details, and asyncio's for the same thing.
EXTRA_INFO_NAMES = {"client_addr": "sockname", "server_addr": "peername"}

Key = tuple[bytes, bytes, int]


class _ExtraMessage(Exception):
    """Raised into llhttp when a message starts after the response asked for: parsing stops there."""


def _protocol_error(exc: httptools.HttpParserError) -> httpx.RemoteProtocolError:
    """The error for a refused response, naming what the server did wrong."""
    cause = exc.__context__
    if isinstance(cause, httpx.RemoteProtocolError):
        return cause  # raised by one of our callbacks, already saying what was wrong
    reason = str(exc)
    for marker, fault in LLHTTP_FAULTS:
        if marker in reason:
            return httpx.RemoteProtocolError(f"malformed HTTP response: {fault} [llhttp: {reason}]")
    return httpx.RemoteProtocolError(f"malformed HTTP response: {reason}")


class NetworkStream:
    """`extensions["network_stream"]`: the connection's socket and TLS details, as httpcore's stream.

    Only `get_extra_info` is offered ("ssl_object", "client_addr", "server_addr", "socket", and any
    name asyncio's transports know): the pool owns the connection, so it can't be read, written or
    closed through this.
    """

    __slots__ = ("_conn",)

    def __init__(self, conn: HTTP11Connection | H2Connection) -> None:
        self._conn = conn

    def get_extra_info(self, info: str) -> Any:
        """What the connection's asyncio transport reports for `info` (httpcore's names accepted)."""
        transport = self._conn.transport
        if transport is None:
            return None
        return transport.get_extra_info(EXTRA_INFO_NAMES.get(info, info))


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
        self.checked_out = 0.0  # loop time the current request got this connection
        self.in_use = False
        self.error: httpx.TransportError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._wait_due: float | None = None  # loop time the current wait times out, unless data arrives
        self._wait_limit: float | None = None
        self._wait_reads = True
        self._last_read = 0.0
        self.write_paused = False
        self._read_paused = False
        # While fetch reads a body whole: wake it only once more than this is buffered (or the response
        # ended), not for each read; None wakes the waiter on every read (the head, a streamed body).
        self.wake_above: int | None = None
        self.deadline: Deadline | None = None
        self.network_stream = NetworkStream(self)
        self.head_version = "1.1"  # a HEAD answer's, read before its parser is replaced
        # A head with an obs-fold, held until it is whole; an exchange that fails holding one closes
        # the connection, so no later exchange finds it set.
        self._held: bytearray | None = None
        self._fold_at = 0
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
        self.trailers: list[tuple[bytes, bytes]] | None = None
        self._unparsed_head = 0  # bytes received while the head was incomplete
        self._head_reads: list[bytes] | None = None  # those bytes, kept in case an obs-fold needs them

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports have asyncio.Transport's methods, not its class.
        self.transport = cast(asyncio.Transport, transport)

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
        received = len(data)
        if self._held is not None:
            self._held += data
            unfolded = self._unfold()
            if unfolded is None:  # the folded head is still incomplete
                if self._head_too_large(received):
                    self._fail(self._head_error())
                return
            data = unfolded
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            if not self._recover(exc, data):
                return
        if self.head and self.headers_done:
            # llhttp can't be told a response answers HEAD; a fresh parser ignores its framing.
            self.parser = httptools.HttpResponseParser(self)
        if not head_was_done:
            if self._head_too_large(received) and self.error is None:
                self._fail(self._head_error())
                return
            if not self.headers_done and self._held is None:
                # Rare (a head split across reads): keep its bytes, in case an obs-fold follows.
                if self._head_reads is None:
                    self._head_reads = []
                self._head_reads.append(bytes(data))
        if self.buffered > READ_HIGH_WATER and not self._read_paused and self.transport is not None:
            self._read_paused = True
            self.transport.pause_reading()
        limit = self.wake_above
        if limit is not None and self.buffered <= limit and not self.complete and self.error is None:
            return  # a body read whole over many reads: its reader wakes once, not once a read
        waiter = self._waiter  # _wake, inlined: this runs for every read
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _recover(self, exc: Exception, data: bytes | memoryview) -> bool:
        """After llhttp stopped on `data`: False when the exchange ended there, True to carry on."""
        if self.complete:
            self._drop_after_message()
        elif isinstance(exc, httptools.HttpParserUpgrade):
            self._fail(httpx.RemoteProtocolError("protocol upgrades are not supported"))
        elif not self.headers_done and str(exc) == LLHTTP_OBS_FOLD:
            return self._hold_folded(data)
        else:
            assert isinstance(exc, httptools.HttpParserError)
            self._fail(_protocol_error(exc))
        return False

    def _drop_after_message(self) -> None:
        """Bytes followed the complete response: keep it, but never read this connection again.

        They answer nothing we asked (RFC 9112 §9.3: responses pair with requests in order), so they
        are a server out of step or an attempt at response splitting; parsing stopped at the boundary.
        """
        self.abort()
        self._wake()

    def _hold_folded(self, data: bytes | memoryview) -> bool:
        """Start over on a head llhttp refused for an obs-fold: hold it, and parse it unfolded once whole.

        Rare, so only this path pays for it: the common one keeps no copy of a head read in one piece.
        """
        held = bytearray().join(self._head_reads or ())
        held += data
        self._head_reads = None
        fold = OBS_FOLD.search(held)
        self._fold_at = fold.start() if fold is not None else 0
        self._held = held
        self.parser = httptools.HttpResponseParser(self)
        self.reason = b""
        self.headers = []
        self.names = set()
        self.framed = False
        self.declared = -1
        unfolded = self._unfold()
        if unfolded is None:
            return True
        try:
            self.parser.feed_data(unfolded)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            return self._recover(exc, unfolded)
        return True

    def _unfold(self) -> bytes | None:
        """The held bytes with each obs-fold replaced by a space (RFC 9112 §5.2), once the head is whole."""
        held = self._held
        assert held is not None
        end = held.find(b"\r\n\r\n", self._fold_at)
        if end < 0:
            return None
        self._held = None
        return OBS_FOLD.sub(b" ", held[:end]) + held[end:]

    def _head_error(self) -> httpx.RemoteProtocolError:
        limit = self.max_header_bytes
        return httpx.RemoteProtocolError(f"the server's response header block exceeds {limit} bytes")

    def _head_too_large(self, received: int) -> bool:
        """Whether the response head passed `max_header_bytes`, given `received` new bytes (called
        for each read until the head is done, and for the read that finished it)."""
        if not self.headers_done:
            self._unparsed_head += received
            return self._unparsed_head > self.max_header_bytes
        if self._unparsed_head + received <= self.max_header_bytes:
            return False  # the head can't be longer than everything received
        # The head ended inside a large read that also carried body. All the body so far came in this
        # read, so the head is at most the rest of it (a 100 KB body in the head's read ends here).
        if self._unparsed_head + received - self.buffered <= self.max_header_bytes:
            return False
        # Not when chunk framing or a refused parse leaves that bound loose: count the head itself.
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
        self.write_paused = False
        self._wake()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self._wake()

    # --- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            raise _ExtraMessage  # the response we asked for is over: stop llhttp at its boundary

    def on_status(self, status: bytes) -> None:
        if b"\x00" in status:
            # RFC 9112 §4: the reason phrase is HTAB, SP and visible characters; a NUL cuts C strings.
            raise httpx.RemoteProtocolError("malformed HTTP response: a NUL byte in the reason phrase")
        self.reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        value = value.rstrip(b" \t")  # RFC 9110 §5.5: whitespace around a value is not part of it
        if self.headers_done:
            # A chunked body's trailer (RFC 9110 §6.5): never merged into the header section.
            if self.trailers is None:
                self.trailers = []
            self.trailers.append((name, value))
            return
        lowered = name.lower()
        if lowered in FRAMING_FIELDS:  # one lookup for the many fields that frame nothing
            if lowered == b"content-length":
                self.framed = True
                self.declared = int(value) if value.isdigit() else -1
            else:
                if lowered in self.names or value.lower() != b"chunked":
                    # llhttp would frame by a final "chunked" and hand back the still-coded bytes; like
                    # h11, support no transfer coding but chunked (RFC 9112 §6.1), so a body is never
                    # other than its headers describe.
                    raise httpx.RemoteProtocolError(
                        "malformed HTTP response: the server sent Transfer-Encoding "
                        f"{value.decode('latin-1')!r}"
                        + (" more than once" if lowered in self.names else "")
                        + "; only 'chunked' is supported"
                    )
                self.framed = True
        self.headers.append((name, lowered, value))
        self.names.add(lowered)

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # informational; the final response follows on the same connection
        self.status = status
        self.headers_done = True
        if self.head or status in (204, 304):
            # RFC 9112 §6.3: these end at their head whatever it declares; any bytes after it are the
            # start of a message nobody asked for (on_message_begin drops the connection then).
            self.framed = True
        if self.head:
            self.complete = True
            self.head_version = self.parser.get_http_version()  # the parser is replaced after this
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
            self.declared = -1
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

    def wait(self, limit: float | None, *, reads: bool = True) -> asyncio.Future[None]:
        """A future for the next event; `limit` seconds without one (or without data), or the exchange's
        deadline, fail it with `httpx.ReadTimeout` (`httpx.WriteTimeout` when not waiting on `reads`).

        A future to await rather than a coroutine: one frame less per wait. A waiter left behind once
        done (or cancelled with its awaiting task) is inert: `_wake` and `_on_timer` skip a done one.
        """
        waiter = self._waiter = self.loop.create_future()
        delay = limit if self.deadline is None else within(limit, self.deadline)
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
        return waiter

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
        while self.write_paused and not self.closed:
            await self.wait(limit, reads=False)


def request_head(request: httpx.Request, target: bytes | None = None) -> bytes:
    """The request line (to `target`, or the URL's path and query) and headers, as HTTP/1.1 (RFC 9112 §3).

    A request's method and header block recur (the client's defaults, one Host per origin), so each
    pair is checked and serialized once and kept: 6.5k instructions a request instead of 11.8k.
    """
    raw = header_list(request.headers)
    key = (request.method, *raw)
    known = _HEADS.get(key)
    if known is None:
        known = _head_parts(request.method, raw)
        if len(_HEADS) >= HEAD_CACHE_SIZE:
            _HEADS.clear()
        _HEADS[key] = known
    method, block = known
    if target is None:
        target = request.url.raw_path
    return b"".join((method, b" ", target, b" HTTP/1.1\r\n", block))


def _head_parts(method: str, raw: list[tuple[bytes, bytes, bytes]]) -> tuple[bytes, bytes]:
    """The method and the header block as bytes, refused as h11 (stock httpx) refuses them.

    RFC 9110 §9.1 and §5.1: a method and a field name are tokens; §5.5: a field value never carries
    CR, LF or NUL (which would end the field early: header injection), nor leading or trailing
    whitespace. The value is not quoted in the error, since it may be a credential.
    """
    if TOKEN.fullmatch(method) is None:
        raise httpx.LocalProtocolError(f"Illegal request method {method!r}")
    for name, _, value in raw:
        if TOKEN_BYTES.fullmatch(name) is None:
            raise httpx.LocalProtocolError(f"Illegal header name {name!r}")
        if FIELD_VALUE.fullmatch(value) is None:
            raise httpx.LocalProtocolError(
                f"Illegal header value for {name.decode('ascii')!r}: CR, LF, NUL or surrounding whitespace"
            )
    block = b"".join([b"%b: %b\r\n" % (name, value) for name, _, value in raw]) + b"\r\n"
    return method.encode("ascii"), block
